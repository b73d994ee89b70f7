"""Two-class image datasets: IDX and CIFAR-10 binary loaders on tiny files the tests
write themselves, the search order, error messages, the MNIST -> Fashion-MNIST
fallback, and one training run on the real two-class Fashion-MNIST set.

The real-data test is skipped when the files are absent, except with
PHASEKIT_REQUIRE_REAL_DATA=1 (CI), where it fails instead.
"""

from __future__ import annotations

import gzip
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from phasekit.config.resolve import merge, resolve_config
from phasekit.errors import ConfigError, DataError
from phasekit_plugins import images
from phasekit_plugins.images import (
    CIFAR_RECORD,
    FMNIST_SOURCE,
    DataFilesMissing,
    DatasetFallbackWarning,
    locate,
)

from .helpers import sweep

SIDE = 4                 # tiny 4 x 4 images, d = 16
N_TRAIN, N_TEST = 30, 20


# -- writing tiny files -----------------------------------------------------------------

def idx_bytes(arr: np.ndarray, magic_type: int = 0x08) -> bytes:
    header = bytes([0, 0, magic_type, arr.ndim])
    header += b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def tiny_images(num: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Image i has every pixel equal to offset + i; labels cycle 0..9."""
    labels = np.arange(num) % 10
    pixels = (offset + np.arange(num))[:, None, None] * np.ones((1, SIDE, SIDE))
    return pixels.astype(np.uint8), labels.astype(np.uint8)


def write(path: Path, payload: bytes, gz: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as fh:
            fh.write(payload)
    else:
        path.write_bytes(payload)


def write_idx_set(folder: Path, gz: bool) -> None:
    x, y = tiny_images(N_TRAIN, 0)
    xt, yt = tiny_images(N_TEST, 100)
    write(folder / "train-images-idx3-ubyte", idx_bytes(x), gz)
    write(folder / "train-labels-idx1-ubyte", idx_bytes(y), gz)
    write(folder / "t10k-images-idx3-ubyte", idx_bytes(xt), gz)
    write(folder / "t10k-labels-idx1-ubyte", idx_bytes(yt), gz)


def cifar_bytes(labels, offset: int) -> bytes:
    rec = np.zeros((len(labels), CIFAR_RECORD), dtype=np.uint8)
    rec[:, 0] = labels
    rec[:, 1:] = (offset + np.arange(len(labels)))[:, None]
    return rec.tobytes()


def write_cifar(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for b in range(1, 6):      # 10 records per batch, labels cycle; image value 10 b + i
        (folder / f"data_batch_{b}.bin").write_bytes(
            cifar_bytes([(b + i) % 10 for i in range(10)], 10 * b))
    (folder / "test_batch.bin").write_bytes(cifar_bytes([i % 10 for i in range(12)], 200))


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No $PHASEKIT_DATA and empty system folders: only what a test writes is found."""
    monkeypatch.delenv(images.ENV_DATA, raising=False)
    monkeypatch.setattr(images, "SYSTEM_ROOTS", (tmp_path / "system",))
    return tmp_path


def load(manager, name: str, **options):
    return resolve_config({"model": {"name": "relu", "width": 4},
                           "dataset": {"name": name, **options}, "sweep": {}}, manager)[1]


# -- IDX ------------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [True, False])
def test_idx_two_class_subset(manager, isolated, gz):
    write_idx_set(isolated / "m", gz)
    data = load(manager, "mnist", path=str(isolated / "m"), num_train=4)
    # the first four training images of classes 0 and 1 are images 0, 1, 10, 11
    pixel = data.x_train[:, 0] * 255 * math.sqrt(SIDE * SIDE)
    torch.testing.assert_close(pixel, torch.tensor([0.0, 1.0, 10.0, 11.0], dtype=torch.float64))
    assert data.y_train.tolist() == [-1.0, 1.0, -1.0, 1.0]
    # every test image of the two classes: 0, 1, 10, 11 of the test file
    assert data.y_test.tolist() == [-1.0, 1.0, -1.0, 1.0]
    torch.testing.assert_close(data.x_test[:, 3] * 255 * 4,
                               torch.tensor([100.0, 101.0, 110.0, 111.0], dtype=torch.float64))
    assert data.attrs["input_scale"] == "sqrt_d" and data.attrs["num_test"] == 4


def test_idx_classes_order_and_scaling(manager, isolated):
    write_idx_set(isolated / "m", gz=True)
    data = load(manager, "fmnist", path=str(isolated / "m"), num_train=4, classes=[3, 1],
                input_scale="none", max_test=3)
    assert data.y_train.tolist() == [1.0, -1.0, 1.0, -1.0]     # images 1, 3, 11, 13
    torch.testing.assert_close(data.x_train[:, 5] * 255,
                               torch.tensor([1.0, 3.0, 11.0, 13.0], dtype=torch.float64))
    assert data.x_test.shape == (3, 16)
    assert "trouser (label +1)" in data.attrs["classes"]


def test_gz_and_raw_files_give_the_same_data(manager, isolated):
    write_idx_set(isolated / "gz", gz=True)
    write_idx_set(isolated / "raw", gz=False)
    a = load(manager, "mnist", path=str(isolated / "gz"), num_train=6)
    b = load(manager, "mnist", path=str(isolated / "raw"), num_train=6)
    torch.testing.assert_close(a.x_train, b.x_train, rtol=0, atol=0)
    torch.testing.assert_close(a.y_test, b.y_test, rtol=0, atol=0)


def test_search_order_path_then_env_subfolder_then_system(manager, isolated, monkeypatch):
    env = isolated / "env"
    write_idx_set(env / "fashion-mnist", gz=True)
    write_idx_set(env, gz=True)          # flat: ambiguous between MNIST and Fashion-MNIST
    monkeypatch.setenv(images.ENV_DATA, str(env))
    assert load(manager, "fmnist", num_train=2).attrs["folder"] == str(env / "fashion-mnist")
    with pytest.raises(DataFilesMissing) as err:
        load(manager, "mnist", num_train=2)
    assert str(env / "mnist") in str(err.value)
    write_idx_set(isolated / "system" / "mnist", gz=False)
    assert load(manager, "mnist", num_train=2).attrs["folder"] == str(
        isolated / "system" / "mnist")
    write_idx_set(isolated / "mine", gz=False)
    assert load(manager, "mnist", path=str(isolated / "mine"), num_train=2).attrs[
        "folder"] == str(isolated / "mine")


def test_missing_files_say_what_where_and_how(manager, isolated):
    with pytest.raises(DataError) as err:
        load(manager, "fmnist", path=str(isolated / "nowhere"))
    msg = str(err.value)
    for name in ("train-images-idx3-ubyte", "t10k-labels-idx1-ubyte", str(isolated / "nowhere"),
                 str(isolated / "system" / "fashion-mnist"), "dataset-fashion-mnist",
                 "PHASEKIT_DATA"):
        assert name in msg
    with pytest.raises(DataError, match="MNIST is not packaged by Debian"):
        load(manager, "mnist")


def test_incomplete_folder_is_named(manager, isolated):
    write_idx_set(isolated / "m", gz=True)
    (isolated / "m" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"lacks t10k-labels-idx1-ubyte"):
        load(manager, "mnist", path=str(isolated / "m"))


@pytest.mark.parametrize("damage, message", [
    ("magic", "magic number"),
    ("ndim", "dimension"),
    ("truncate", "header says shape"),
    ("count", "images but"),
    ("label", "outside 0..9"),
    ("gzip", "cannot be read"),
])
def test_malformed_idx_files(manager, isolated, damage, message):
    folder = isolated / "m"
    write_idx_set(folder, gz=False)
    images_file = folder / "train-images-idx3-ubyte"
    labels_file = folder / "train-labels-idx1-ubyte"
    x, y = tiny_images(N_TRAIN, 0)
    culprit = images_file
    if damage == "magic":
        images_file.write_bytes(idx_bytes(x, magic_type=0x0D))
    elif damage == "ndim":
        culprit = labels_file
        labels_file.write_bytes(idx_bytes(y.reshape(-1, 1)))
    elif damage == "truncate":
        images_file.write_bytes(idx_bytes(x)[:-5])
    elif damage == "count":
        labels_file.write_bytes(idx_bytes(y[:-1]))
    elif damage == "label":
        culprit = labels_file
        labels_file.write_bytes(idx_bytes(np.full(N_TRAIN, 12, dtype=np.uint8)))
    elif damage == "gzip":
        images_file.unlink()
        images_file = folder / "train-images-idx3-ubyte.gz"
        images_file.write_bytes(b"\x1f\x8b\x08\x00garbage")
        culprit = images_file
    with pytest.raises(DataError, match=message) as err:
        load(manager, "mnist", path=str(folder))
    assert str(culprit) in str(err.value)


def test_option_checks(manager, isolated):
    write_idx_set(isolated / "m", gz=False)
    for bad in ([1, 1], [0, 10], [0]):
        with pytest.raises(ConfigError, match="dataset.classes"):
            load(manager, "mnist", path=str(isolated / "m"), classes=bad)
    with pytest.raises(DataError, match="only 6 training images"):
        load(manager, "mnist", path=str(isolated / "m"), num_train=7)


# -- CIFAR-10 binary -----------------------------------------------------------------------

def test_cifar_binary_subset_across_batches(manager, isolated, monkeypatch):
    root = isolated / "env"
    write_cifar(root / "cifar-10-batches-bin")
    monkeypatch.setenv(images.ENV_DATA, str(root))
    data = load(manager, "cifar10", num_train=5, input_scale="none")
    # batch b holds labels (b + i) % 10 for i < 10: the first five 0/1 span batches 1-3
    expect = []
    for b in range(1, 6):
        for i in range(10):
            if (b + i) % 10 in (0, 1):
                expect.append((10 * b + i, -1.0 if (b + i) % 10 == 0 else 1.0))
    expect = expect[:5]
    assert data.x_train.shape == (5, 3072)
    torch.testing.assert_close(data.x_train[:, 100] * 255,
                               torch.tensor([e[0] for e in expect], dtype=torch.float64))
    assert data.y_train.tolist() == [e[1] for e in expect]
    assert data.y_test.tolist() == [-1.0, 1.0, -1.0, 1.0]         # test labels 0,1,..,0,1
    assert "airplane (label -1) vs automobile (label +1)" == data.attrs["classes"]
    # the binary files may also sit directly in $PHASEKIT_DATA
    flat = isolated / "flat"
    write_cifar(flat)
    monkeypatch.setenv(images.ENV_DATA, str(flat))
    assert load(manager, "cifar10", num_train=2).attrs["folder"] == str(flat)


@pytest.mark.parametrize("damage, message", [("size", "record size"),
                                             ("label", "label byte 200")])
def test_malformed_cifar(manager, isolated, damage, message):
    folder = isolated / "c"
    write_cifar(folder)
    bad = folder / "data_batch_1.bin"
    if damage == "size":
        bad.write_bytes(bad.read_bytes()[:-10])
    else:
        bad.write_bytes(cifar_bytes([200, 0, 1], 0))
    with pytest.raises(DataError, match=message) as err:
        load(manager, "cifar10", path=str(folder), num_train=2)
    assert str(bad) in str(err.value)


def test_missing_cifar_says_how_to_get_it(manager, isolated):
    with pytest.raises(DataError, match="cifar-10-binary.tar.gz") as err:
        load(manager, "cifar10")
    assert "data_batch_1.bin" in str(err.value) and "test_batch.bin" in str(err.value)


# -- fallback and the point dataset ----------------------------------------------------------

def test_mnist_falls_back_to_fmnist_and_says_so(manager, isolated, monkeypatch):
    monkeypatch.setenv(images.ENV_DATA, str(isolated / "env"))
    with pytest.raises(DataFilesMissing):
        load(manager, "mnist", fallback="fmnist")      # neither is there
    write_idx_set(isolated / "env" / "fashion-mnist", gz=True)
    with pytest.raises(DataFilesMissing):
        load(manager, "mnist")                          # no fallback asked for
    raw = {"model": {"name": "relu", "width": 8},
           "dataset": {"name": "mnist", "fallback": "fmnist", "num_train": 6},
           "sweep": {"eta_lambda0": [1.0], "max_steps": 3}}
    with pytest.warns(DatasetFallbackWarning, match="Fashion-MNIST"):
        ds = sweep(raw)
    assert "Fashion-MNIST" in ds.attrs["dataset_fallback"]
    assert ds.attrs["dataset_source"] == "fmnist" and ds.attrs["dataset"] == "mnist"
    assert {"test_loss", "test_accuracy", "generalisation_gap", "sparsity"} <= set(ds)


def test_point_dataset_defaults_to_figure_10(manager):
    data = load(manager, "point")
    assert data.x_train.tolist() == [[4.0]] and data.y_train.tolist() == [2.0]
    assert load(manager, "point", x=[1.0, 2.0], y=0.5).x_train.shape == (1, 2)


def test_mnist_presets_use_the_fallback():
    from phasekit_plugins.network_presets import PRESETS

    for fig in ("fig3", "fig11", "fig14"):
        assert PRESETS[fig][1]["dataset"] == {"name": "mnist", "num_train": 128,
                                              "fallback": "fmnist"}


# -- the real two-class Fashion-MNIST set ----------------------------------------------------

def real_fmnist_or_skip():
    try:
        return locate(FMNIST_SOURCE, "")
    except DataError as exc:
        reason = (f"real Fashion-MNIST not available ({str(exc).splitlines()[0]}); "
                  f"apt-get install dataset-fashion-mnist")
        if os.environ.get("PHASEKIT_REQUIRE_REAL_DATA") == "1":
            pytest.fail(f"PHASEKIT_REQUIRE_REAL_DATA=1 but {reason}")
        pytest.skip(reason)


def test_real_fmnist_two_class_set(manager):
    real_fmnist_or_skip()
    data = load(manager, "fmnist")
    assert data.x_train.shape == (128, 784)
    assert data.x_test.shape == (2000, 784)             # 1000 T-shirts + 1000 trousers
    assert float(data.y_test.sum()) == 0.0
    assert set(data.y_train.tolist()) == {-1.0, 1.0}
    assert 0.0 <= float(data.x_train.min()) and float(data.x_train.max()) <= 1 / 28 + 1e-15


@pytest.mark.slow
def test_real_fmnist_relu_training(manager):
    """Two-layer ReLU net (width 256) on 128 real images: trains at every c, stays
    accurate on the two-class test set, and gets sparser with c (observations listed in
    docs/theory.md §4)."""
    real_fmnist_or_skip()
    raw = {"model": {"name": "relu", "width": 256},
           "dataset": {"name": "fmnist", "num_train": 128, "max_test": 500},
           "sweep": {"eta_lambda0": [1.0, 3.0, 6.0], "seeds": [0], "max_steps": 400,
                     "record_dense": 20, "record_per_decade": 5}}
    ds = sweep(raw).isel(seed=0)
    assert "diverged" not in ds.status.values
    assert np.all(ds.final_loss.values < 0.5 * ds.loss.isel(step=0).values)
    assert np.all(ds.final_test_accuracy.values > 0.9)
    assert np.all(ds.final_test_loss.values < 0.2)
    sparsity = ds.final_sparsity.isel(layer=0).values
    assert np.all(np.diff(sparsity) > 0), sparsity


def test_every_network_preset_resolves(manager, isolated, monkeypatch):
    """Each preset is a valid config: tiny stand-ins for the three image sets."""
    from phasekit_plugins.network_presets import PRESETS

    env = isolated / "env"
    write_idx_set(env / "mnist", gz=True)
    write_idx_set(env / "fashion-mnist", gz=False)
    write_cifar(env / "cifar-10-batches-bin")
    monkeypatch.setenv(images.ENV_DATA, str(env))
    for name, (description, config) in PRESETS.items():
        assert manager.get("preset", name).config == config and description
        if config["dataset"]["name"] in ("mnist", "fmnist", "cifar10"):
            config = merge(config, {"dataset": {"num_train": 2}})
        resolved, data = resolve_config(config, manager)
        assert resolved.model["width"] == 1024
        assert len(resolved.sweep["eta_lambda0"]) >= 10, name


def test_real_fmnist_input_span_equals_full_coordinates(manager):
    """784-pixel images, D = 32: the default input-span coordinates train the same nets."""
    real_fmnist_or_skip()
    raw = {"model": {"name": "deep_relu", "width": 128, "hidden_layers": 1},
           "dataset": {"name": "fmnist", "num_train": 32, "max_test": 200},
           "sweep": {"eta_lambda0": [1.0, 4.0], "seeds": [0], "max_steps": 100,
                     "record_dense": 20, "record_per_decade": 5}}
    span = sweep(raw)
    full = sweep(merge(raw, {"model": {"input_span": False}}))
    np.testing.assert_array_equal(span.status.values, full.status.values)
    for var in ("loss", "weight_norm", "sharpness", "test_loss", "test_accuracy", "sparsity"):
        np.testing.assert_allclose(span[var].values, full[var].values, rtol=1e-9, atol=1e-12,
                                   err_msg=var)
