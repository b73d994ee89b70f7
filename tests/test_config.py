"""Config validation: every invalid config fails before any work, naming the key."""

from __future__ import annotations

import tomllib

import pytest

from phasekit.config.registry import get_plugin_manager
from phasekit.config.resolve import dump_toml, merge, parse_set, resolve_config, resolve_sweep
from phasekit.errors import ConfigError
from phasekit.options import Option, resolve_options, unknown_key_message

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
    ({"model": {"width": "ten"}}, r'model.width must be an integer, got "ten"$'),
    ({"model": {"width": True}}, r"model.width must be an integer, got true$"),
    ({"model": {"width": 10.5}}, r"model.width must be an integer"),
    ({"model": {"activation": "gelu"}}, r'model.activation must be one of "identity", '
                                        r'.*; got "gelu"$'),
    ({"model": {"zeta": -1.0}}, r"model.zeta must be positive; got -1.0$"),
    ({"model": {"zeta": float("inf")}}, r"model.zeta must be finite, got inf$"),
    ({"model": {"eigen_low": 3.0, "eigen_high": 2.0}}, r"model.eigen_low \(3.0\) must not"),
    ({"model": {"name": "quadratc"}}, r"model.name: unknown model 'quadratc'. Available: "
                                      r"(.*)quadratic, quadratic_bias"),
    ({"dataset": {"name": "imagenet"}}, r"dataset.name: unknown dataset 'imagenet'. "
                                        r"Available: (.*)random(.*)toy"),
    ({"dataset": {"x": "one"}}, r'dataset.x must be a list, got "one"$'),
    ({"dataset": {"x": [1.0, "a"]}}, r'dataset.x\[1\] must be a number, got "a"$'),
    ({"dataset": {"x": {"a": False}}}, r"dataset.x must be a list, got \{a = false\}$"),
    ({"sweep": {"eta_lambda0": []}}, r"sweep.eta_lambda0 must be a non-empty list"),
    ({"sweep": {"eta_lambda0": [1.0, -2.0]}}, r"sweep.eta_lambda0 values must be positive"),
    ({"sweep": {"eta_lambda0": [1.0, 1.0]}}, r"repeats the value"),
    ({"sweep": {"eta_lambda0": {"start": 1, "stop": 2}}}, r"start, stop and num"),
    ({"sweep": {"seeds": [0, -1]}}, r"sweep.seeds\[1\] must be a non-negative integer"),
    ({"sweep": {"seeds": 0}}, r"sweep.seeds as a count must be at least 1"),
    ({"sweep": {"max_steps": 0}}, r"sweep.max_steps must be positive"),
    ({"sweep": {"tol": -1.0}}, r"sweep.tol must be zero or positive"),
    ({"sweep": {"dtype": "float16"}}, r'sweep.dtype must be one of "float64", "float32"; '
                                      r'got "float16"$'),
    ({"sweep": {"device": "tpu"}}, r"sweep.device must be 'cpu' or 'cuda'"),
    ({"sweep": {"max_steps": True}}, r"sweep.max_steps must be an integer, got true$"),
    ({"optimizer": {"name": "sgd"}}, r"unknown table \[optimizer\]"),
])
def test_invalid_configs(manager, override, match):
    bad(manager, override, match)


def test_missing_name_lists_available(manager):
    with pytest.raises(ConfigError, match=r"model.name is required. Available: .*quadratic"):
        resolve_config({"dataset": {"name": "toy"}}, manager)


def test_defaults_are_filled_in(manager):
    config, data = resolve_config(BASE, manager)
    assert config.model["zeta"] == pytest.approx((2 / 10) ** 0.5)        # docs/theory.md §2.2
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


# A sweep-like table whose caller handles eta_lambda0 and seeds itself, as
# config.resolve_sweep does.
PLAIN = {"max_steps": Option(10, "steps"), "tol": Option(1e-8, "tolerance"),
         "device": Option("cpu", "device")}
SPECIAL = ("eta_lambda0", "seeds")


def known_keys(message: str) -> list[str]:
    return message.split("Known keys: ", 1)[1].rstrip(".").split(", ")


@pytest.mark.parametrize("key, meant", [("seed", "seeds"), ("eta", "eta_lambda0"),
                                        ("Seeds", "seeds"), ("max-steps", "max_steps"),
                                        ("tolerance", "tol"), ("devcie", "device")])
def test_unknown_key_suggests_the_keys_the_caller_handles(key, meant):
    with pytest.raises(ConfigError) as err:
        resolve_options("sweep", PLAIN, {key: 3}, extra_known=SPECIAL)
    message = str(err.value)
    assert message.startswith(f"unknown key 'sweep.{key}'. Did you mean '{meant}'? ")
    assert known_keys(message) == ["device", "eta_lambda0", "max_steps", "seeds", "tol"]


def test_without_extra_known_the_popped_keys_are_neither_listed_nor_suggested():
    with pytest.raises(ConfigError) as err:
        resolve_options("sweep", PLAIN, {"seed": 3})
    assert "Did you mean" not in str(err.value)
    assert known_keys(str(err.value)) == ["device", "max_steps", "tol"]


def test_extra_known_keys_pass_through_unchecked_and_may_be_absent():
    out = resolve_options("sweep", PLAIN, {"seeds": "anything", "tol": 0}, extra_known=SPECIAL)
    assert out == {"max_steps": 10, "tol": 0.0, "device": "cpu", "seeds": "anything"}
    assert resolve_options("model", PLAIN, {}, extra_known="name") == {
        "max_steps": 10, "tol": 1e-8, "device": "cpu"}
    with pytest.raises(ConfigError, match="Known keys: device, max_steps, name, tol."):
        resolve_options("model", PLAIN, {"nme": "x"}, extra_known="name")


def test_no_suggestion_for_a_key_unlike_any():
    message = unknown_key_message("sweep.lr", [*PLAIN, *SPECIAL])
    assert message == ("unknown key 'sweep.lr'. Known keys: device, eta_lambda0, max_steps, "
                       "seeds, tol.")


@pytest.mark.parametrize("given, match", [
    ({"max_steps": True}, r"^sweep.max_steps must be an integer, got true$"),
    ({"max_steps": "abc"}, r'^sweep.max_steps must be an integer, got "abc"$'),
    ({"max_steps": [1, "a b", False]}, r'^sweep.max_steps must be an integer, '
                                       r'got \[1, "a b", false\]$'),
    ({"device": 3}, r"^sweep.device must be a string, got 3$"),
    ({"tol": float("nan")}, r"^sweep.tol must be finite, got nan$"),
    ({"tol": float("-inf")}, r"^sweep.tol must be finite, got -inf$"),
])
def test_type_errors_speak_toml(given, match):
    with pytest.raises(ConfigError, match=match):
        resolve_options("sweep", PLAIN, given)


def test_a_table_that_is_not_a_table():
    with pytest.raises(ConfigError, match=r'^\[model\] must be a table, got \["x"\]$'):
        resolve_options("model", PLAIN, ["x"])


def test_set_replaces_a_table_instead_of_merging_into_it():
    """``--set 'sweep.axes={}'`` on a preset with axes takes effect: the override
    replaces the preset's axes, and ``--set`` of one axis keeps the others."""
    from phasekit.config.resolve import build_config

    raw = build_config(preset="uv_width", overrides=["sweep.axes={}", "model.width=1024"])
    assert raw["sweep"]["axes"] == {}
    config, _ = resolve_config(raw, get_plugin_manager())
    assert config.axes == {} and config.model["width"] == 1024
    two = build_config(preset="uv_width", overrides=['sweep.axes={"model.width"=[64]}'])
    assert two["sweep"]["axes"] == {"model.width": [64]}
    base = build_config(preset="uv_width")
    kept = build_config(preset="uv_width", axes=["model.a_minus=[0.5]"])
    assert kept["sweep"]["axes"] == {**base["sweep"]["axes"], "model.a_minus": [0.5]}


def test_the_early_window_must_be_recorded_at_every_step():
    """Steps 1..early_window must all be recorded: record_dense = 10 records steps 0..9
    (and max_steps), so early_window = 10 needs record_dense >= 11 unless the run ends
    at step 10."""
    with pytest.raises(ConfigError, match="sweep.early_window = 10 needs sweep.record_dense "
                                          ">= 11"):
        resolve_sweep({"early_window": 10, "record_dense": 10, "max_steps": 20})
    assert resolve_sweep({"early_window": 10, "record_dense": 10, "max_steps": 10})
    assert resolve_sweep({"early_window": 10, "record_dense": 11, "max_steps": 20})
