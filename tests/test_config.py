"""Config validation: every invalid config fails before any work, naming the key."""

from __future__ import annotations

import tomllib

import pytest

from phasekit.config import dump_toml, merge, parse_set, resolve_config, resolve_sweep
from phasekit.options import ConfigError

BASE = {"model": {"name": "quadratic", "width": 10}, "dataset": {"name": "toy"},
        "sweep": {"eta_lambda0": [1.0, 2.0]}}


def bad(manager, override, match):
    with pytest.raises(ConfigError, match=match):
        resolve_config(merge(BASE, override), manager)


@pytest.mark.parametrize("override, match", [
    ({"model": {"widht": 10}}, r"unknown key 'model.widht'. Did you mean 'width'\?"),
    ({"sweep": {"max_step": 10}}, r"unknown key 'sweep.max_step'. Did you mean 'max_steps'"),
    ({"model": {"width": 11}}, r"model.width must be even"),
    ({"model": {"width": -4}}, r"model.width must be a positive even integer"),
    ({"model": {"width": 0}}, r"model.width must be a positive even integer"),
    ({"model": {"width": "ten"}}, r"model.width must be an integer, got 'ten'"),
    ({"model": {"width": 10.5}}, r"model.width must be an integer"),
    ({"model": {"activation": "gelu"}}, r"model.activation must be one of 'identity'"),
    ({"model": {"zeta": -1.0}}, r"model.zeta must be positive"),
    ({"model": {"eigen_low": 3.0, "eigen_high": 2.0}}, r"model.eigen_low \(3.0\) must not"),
    ({"model": {"name": "quadratc"}}, r"model.name: unknown model 'quadratc'. Available: "
                                      r"(.*)quadratic, quadratic_bias"),
    ({"dataset": {"name": "imagenet"}}, r"dataset.name: unknown dataset 'imagenet'. "
                                        r"Available: (.*)random(.*)toy"),
    ({"dataset": {"x": "one"}}, r"dataset.x must be a list"),
    ({"dataset": {"x": [1.0, "a"]}}, r"dataset.x\[1\] must be a number"),
    ({"sweep": {"eta_lambda0": []}}, r"sweep.eta_lambda0 must be a non-empty list"),
    ({"sweep": {"eta_lambda0": [1.0, -2.0]}}, r"sweep.eta_lambda0 values must be positive"),
    ({"sweep": {"eta_lambda0": [1.0, 1.0]}}, r"repeated values"),
    ({"sweep": {"eta_lambda0": {"start": 1, "stop": 2}}}, r"start, stop and num"),
    ({"sweep": {"seeds": [0, -1]}}, r"sweep.seeds\[1\] must be a non-negative integer"),
    ({"sweep": {"seeds": 0}}, r"sweep.seeds as a count must be at least 1"),
    ({"sweep": {"max_steps": 0}}, r"sweep.max_steps must be positive"),
    ({"sweep": {"tol": -1.0}}, r"sweep.tol must be zero or positive"),
    ({"sweep": {"dtype": "float16"}}, r"sweep.dtype must be one of 'float64', 'float32'"),
    ({"sweep": {"device": "tpu"}}, r"sweep.device must be 'cpu' or 'cuda'"),
    ({"sweep": {"max_steps": True}}, r"sweep.max_steps must be an integer"),
    ({"optimizer": {"name": "sgd"}}, r"unknown table \[optimizer\]"),
])
def test_invalid_configs(manager, override, match):
    bad(manager, override, match)


def test_missing_name_lists_available(manager):
    with pytest.raises(ConfigError, match=r"model.name is required. Available: .*quadratic"):
        resolve_config({"dataset": {"name": "toy"}}, manager)


def test_defaults_are_filled_in(manager):
    config, data = resolve_config(BASE, manager)
    assert config.model["zeta"] == pytest.approx((2 / 10) ** 0.5)        # SPEC 2.2
    assert config.sweep["tol"] == 1e-8 and config.sweep["seeds"] == [0]
    assert config.dataset == {"name": "toy", "x": [1.0], "y": 0.0}
    assert data.num_train == 1


def test_grid_table_and_seed_count():
    sw = resolve_sweep({"eta_lambda0": {"start": 0.5, "stop": 2.5, "num": 5}, "seeds": 3})
    assert sw["eta_lambda0"] == [0.5, 1.0, 1.5, 2.0, 2.5]
    assert sw["seeds"] == [0, 1, 2]


def test_parse_set():
    assert parse_set("sweep.max_steps=200") == {"sweep": {"max_steps": 200}}
    assert parse_set("model.name=quadratic") == {"model": {"name": "quadratic"}}
    assert parse_set("sweep.eta_lambda0=[1, 2.5]") == {"sweep": {"eta_lambda0": [1, 2.5]}}
    assert parse_set("sweep.eta_lambda0={start=1,stop=2,num=3}") == {
        "sweep": {"eta_lambda0": {"start": 1, "stop": 2, "num": 3}}}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_set("sweep.max_steps")
    with pytest.raises(ConfigError, match="TABLE.KEY"):
        parse_set("max_steps=3")


def test_resolved_config_round_trips_through_toml(manager):
    config, _ = resolve_config(merge(BASE, {"sweep": {"eta_lambda0": {"start": 1, "stop": 2,
                                                                      "num": 3}}}), manager)
    text = config.to_toml()
    again, _ = resolve_config(tomllib.loads(text), manager)
    assert again.to_toml() == text


def test_dump_toml_escapes_and_special_values():
    text = dump_toml({"t": {"s": 'a "q" \\ b', "f": float("inf"), "b": True, "skip": None}})
    assert tomllib.loads(text) == {"t": {"s": 'a "q" \\ b', "f": float("inf"), "b": True}}
