"""Two-class image datasets (docs/theory.md §4, Appendix D.3.1): ``mnist``, ``fmnist``, ``cifar10``.

Each image set keeps two classes (defaults: digits 0/1, T-shirt(0)/trouser(1),
airplane(0)/automobile(1)); the first class gets label -1 and the second +1.  The
training set is the first ``num_train`` images of those two classes in the
original training split (file order); the test set is every test image of the
two classes (``max_test`` can cap it, 0 = all).

Input scaling (docs/theory.md §2.5) lives here, not in the models: pixels are divided by
255 (so they lie in [0, 1], not centred) and, with ``input_scale = "sqrt_d"``
(default), by sqrt(d) -- the authors' code feeds x / sqrt(d).  ``"none"`` keeps
the [0, 1] pixels.  Doing it in the dataset means every model, bound (eq. 180
uses X X^T) and observable sees the same inputs, and the stored attributes say
which scaling was used.

Files are read from disk, never downloaded:

* MNIST and Fashion-MNIST: the four IDX files ``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
  ``t10k-labels-idx1-ubyte``, each raw or ``.gz``;
* CIFAR-10: the binary distribution ``data_batch_1.bin`` .. ``data_batch_5.bin``,
  ``test_batch.bin`` (records of one label byte and 3072 pixel bytes, R then G then
  B planes of 32 x 32); no pickle.

Folders searched, first match wins (a folder matches when it holds every file):

1. the dataset option ``path`` and its subfolders named below;
2. ``$PHASEKIT_DATA``'s subfolders ``mnist/`` (or ``MNIST/raw``), ``fashion-mnist/``
   (or ``FashionMNIST/raw``), ``cifar-10-batches-bin/``; for CIFAR-10 also
   ``$PHASEKIT_DATA`` itself.  MNIST and Fashion-MNIST files have identical names,
   so the top level of ``$PHASEKIT_DATA`` is not used for them: a flat folder could
   not tell them apart;
3. system folders ``/usr/share/datasets/<sub>`` and ``/usr/local/share/datasets/<sub>``
   (Debian's ``dataset-fashion-mnist`` installs ``/usr/share/datasets/fashion-mnist``).

A missing or malformed file raises :class:`phasekit.dataset.DataError` naming the
file, the folders searched and how to obtain the data.

``mnist`` has the option ``fallback = "fmnist"`` (used by the MNIST presets): if
no MNIST files are found it loads two-class Fashion-MNIST with the same options,
warns (:class:`DatasetFallbackWarning`) and records the substitution in
``Data.attrs["fallback"]``, stored as the sweep attribute ``dataset_fallback``.
"""

from __future__ import annotations

import gzip
import math
import os
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from phasekit import hookimpl
from phasekit.dataset import Data, DatasetPlugin
from phasekit.errors import DataError
from phasekit.options import Option, non_negative, positive

ENV_DATA = "PHASEKIT_DATA"
SYSTEM_ROOTS = (Path("/usr/share/datasets"), Path("/usr/local/share/datasets"))

IDX_TRAIN = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
IDX_TEST = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_TEST = ("test_batch.bin",)
CIFAR_RECORD = 1 + 3 * 32 * 32


class DataFilesMissing(DataError):
    """No searched folder holds the dataset's files (the message lists the folders)."""


class DatasetFallbackWarning(UserWarning):
    """A preset's dataset was replaced by its fallback (e.g. MNIST -> Fashion-MNIST)."""


@dataclass(frozen=True)
class ImageSource:
    """Where and in which format one image dataset lives."""

    key: str
    title: str
    files: tuple[str, ...]
    subfolders: tuple[str, ...]
    env_top_level: bool
    classes: tuple[str, ...]
    how_to_get: str


MNIST_SOURCE = ImageSource(
    "mnist", "MNIST", IDX_TRAIN + IDX_TEST, ("mnist", "MNIST/raw"), False,
    tuple(str(i) for i in range(10)),
    "MNIST is not packaged by Debian: download the four IDX files (e.g. from "
    "https://ossci-datasets.s3.amazonaws.com/mnist/ or http://yann.lecun.com/exdb/mnist/, "
    "the same files) into $PHASEKIT_DATA/mnist/ or a folder given as dataset.path",
)
FMNIST_SOURCE = ImageSource(
    "fmnist", "Fashion-MNIST", IDX_TRAIN + IDX_TEST, ("fashion-mnist", "FashionMNIST/raw"),
    False,
    ("T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
     "bag", "ankle boot"),
    "install the Debian package dataset-fashion-mnist (apt-get install dataset-fashion-mnist "
    "puts the files in /usr/share/datasets/fashion-mnist/), or download the four IDX files "
    "from https://github.com/zalandoresearch/fashion-mnist into $PHASEKIT_DATA/fashion-mnist/ "
    "or a folder given as dataset.path",
)
CIFAR_SOURCE = ImageSource(
    "cifar10", "CIFAR-10", CIFAR_TRAIN + CIFAR_TEST, ("cifar-10-batches-bin",), True,
    ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
     "truck"),
    "download the binary version cifar-10-binary.tar.gz from "
    "https://www.cs.toronto.edu/~kriz/cifar.html and extract it into $PHASEKIT_DATA (giving "
    "$PHASEKIT_DATA/cifar-10-batches-bin/) or into a folder given as dataset.path",
)


# -- locating files -----------------------------------------------------------------

def candidate_folders(source: ImageSource, path: str) -> list[Path]:
    """Folders searched for ``source``, in order (module docstring)."""
    out: list[Path] = []
    if path:
        root = Path(path).expanduser()
        out += [root] + [root / sub for sub in source.subfolders]
    env = os.environ.get(ENV_DATA)
    if env:
        root = Path(env).expanduser()
        if source.env_top_level:
            out.append(root)
        out += [root / sub for sub in source.subfolders]
    for root in SYSTEM_ROOTS:
        out += [root / sub for sub in source.subfolders]
    seen, unique = set(), []
    for folder in out:
        if folder not in seen:
            seen.add(folder)
            unique.append(folder)
    return unique


def _present(folder: Path, name: str, allow_gz: bool) -> Path | None:
    for candidate in ([folder / name] + ([folder / f"{name}.gz"] if allow_gz else [])):
        if candidate.is_file():
            return candidate
    return None


def locate(source: ImageSource, path: str) -> dict[str, Path]:
    """The files of ``source`` from the first folder holding all of them."""
    allow_gz = source.key != "cifar10"
    folders = candidate_folders(source, path)
    partial = []
    for folder in folders:
        found = {name: _present(folder, name, allow_gz) for name in source.files}
        if all(found.values()):
            return found  # type: ignore[return-value]
        have = [n for n, p in found.items() if p is not None]
        if have:
            missing = [n for n, p in found.items() if p is None]
            partial.append(f"{folder} has {', '.join(have)} but lacks {', '.join(missing)}")
    names = ", ".join(f"{n}{'(.gz)' if allow_gz else ''}" for n in source.files)
    where = "\n  ".join(str(f) for f in folders)
    extra = ("\nIncomplete folders: " + "; ".join(partial)) if partial else ""
    env_note = "" if os.environ.get(ENV_DATA) else f" (${ENV_DATA} is not set)"
    raise DataFilesMissing(
        f"{source.title} files not found. Expected {names} together in one of these "
        f"folders{env_note}:\n  {where}{extra}\nTo obtain them: {source.how_to_get}.")


# -- readers ------------------------------------------------------------------------

def _read_bytes(path: Path, source: ImageSource) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{source.title} file {path} cannot be read ({exc}); it looks "
                        f"corrupt or truncated. Replace it: {source.how_to_get}.") from None


def read_idx(path: Path, ndim: int, source: ImageSource = MNIST_SOURCE) -> np.ndarray:
    """An unsigned-byte IDX array (magic 0x0000 0x08 ndim, big-endian int32 sizes)."""
    raw = _read_bytes(path, source)

    def bad(why: str) -> DataError:
        return DataError(f"{source.title} file {path} is malformed: {why}. Expected an IDX "
                         f"file of unsigned bytes with {ndim} dimension(s). Replace it: "
                         f"{source.how_to_get}.")

    if len(raw) < 4 + 4 * ndim:
        raise bad(f"only {len(raw)} bytes, shorter than the IDX header")
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise bad(f"magic number {raw[:4].hex()} is not 0000 08 {ndim:02x}")
    if raw[3] != ndim:
        raise bad(f"it has {raw[3]} dimension(s)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    body = len(raw) - 4 - 4 * ndim
    if body != math.prod(dims):
        raise bad(f"header says shape {dims} ({math.prod(dims)} bytes) but the file holds "
                  f"{body} data bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def read_idx_pair(images: Path, labels: Path, source: ImageSource
                  ) -> tuple[np.ndarray, np.ndarray]:
    x = read_idx(images, 3, source)
    y = read_idx(labels, 1, source)
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{source.title}: {images} holds {x.shape[0]} images but {labels} "
                        f"holds {y.shape[0]} labels. Replace them: {source.how_to_get}.")
    if y.size and y.max() > 9:
        raise DataError(f"{source.title} file {labels} is malformed: label {int(y.max())} "
                        f"outside 0..9. Replace it: {source.how_to_get}.")
    return x.reshape(x.shape[0], -1), y


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 binary batch: ``(images (N, 3072), labels (N,))`` as uint8."""
    raw = _read_bytes(path, CIFAR_SOURCE)
    if not raw or len(raw) % CIFAR_RECORD:
        raise DataError(f"CIFAR-10 file {path} is malformed: {len(raw)} bytes is not a "
                        f"positive multiple of the record size {CIFAR_RECORD} (1 label byte "
                        f"+ 3072 pixel bytes). Replace it: {CIFAR_SOURCE.how_to_get}.")
    rec = np.frombuffer(raw, dtype=np.uint8).reshape(-1, CIFAR_RECORD)
    labels = rec[:, 0]
    if labels.max() > 9:
        raise DataError(f"CIFAR-10 file {path} is malformed: label byte {int(labels.max())} "
                        f"outside 0..9 (is this the binary, not the python, version?). "
                        f"Replace it: {CIFAR_SOURCE.how_to_get}.")
    return rec[:, 1:], labels


# -- the dataset plugins ------------------------------------------------------------

def _check_classes(value) -> str | None:
    if len(value) != 2:
        return "must list exactly two classes [first, second]"
    if value[0] == value[1]:
        return "must name two different classes"
    if not all(0 <= c <= 9 for c in value):
        return "must be class indices in 0..9"
    return None


def _image_options(default_classes: list[int], classes_help: str) -> dict[str, Option]:
    return {
        "classes": Option(default_classes, f"the two classes [first (label -1), second "
                          f"(label +1)]; {classes_help}", type=list, item=int,
                          check=_check_classes),
        "num_train": Option(128, "D: the first num_train training images of the two classes",
                            check=positive),
        "max_test": Option(0, "cap on the test images of the two classes (0: every one, "
                           "as in the paper)", check=non_negative),
        "input_scale": Option("sqrt_d", "pixels / 255 in [0, 1], then divided by sqrt(d) "
                              "('sqrt_d', the authors' x/sqrt(d), docs/theory.md §2.5) or "
                              "not ('none')",
                              choices=("sqrt_d", "none")),
        "path": Option("", "folder holding the files (searched first; then $PHASEKIT_DATA, "
                       "then /usr/share/datasets)"),
    }


class ImageDataset(DatasetPlugin):
    """Shared loading logic of the two-class image sets (module docstring)."""

    source: ImageSource

    def read_split(self, files: dict[str, Path], split: str, classes: list[int],
                   limit: int) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``limit`` images of the two classes from ``split`` (0: no limit)."""
        raise NotImplementedError

    def load(self) -> Data:
        s = self.settings
        src = self.source
        files = locate(src, s["path"])
        classes = list(s["classes"])
        x, lab = self.read_split(files, "train", classes, s["num_train"])
        if x.shape[0] < s["num_train"]:
            raise DataError(f"{src.title}: only {x.shape[0]} training images of classes "
                            f"{classes}; dataset.num_train = {s['num_train']} is too many")
        xt, labt = self.read_split(files, "test", classes, s["max_test"])
        d = x.shape[1]
        scale = 255.0 * (math.sqrt(d) if s["input_scale"] == "sqrt_d" else 1.0)

        def tensors(pixels, labels):
            xx = torch.from_numpy(pixels.astype(np.float64)) / scale
            yy = torch.where(torch.from_numpy(labels.astype(np.int64)) == classes[0], -1.0, 1.0)
            return xx, yy.to(torch.float64)

        x_train, y_train = tensors(x, lab)
        x_test, y_test = tensors(xt, labt)
        folder = next(iter(files.values())).parent
        names = [src.classes[c] for c in classes]
        return Data(x_train, y_train, x_test, y_test, attrs={
            "source": src.key, "source_title": src.title, "folder": str(folder),
            "classes": f"{names[0]} (label -1) vs {names[1]} (label +1)",
            "num_train": int(x_train.shape[0]), "num_test": int(x_test.shape[0]),
            "input_dim": d, "input_scale": s["input_scale"],
            "input_scaling": "x = pixels/255/sqrt(d)" if s["input_scale"] == "sqrt_d"
            else "x = pixels/255"})


def _first_of_classes(labels: np.ndarray, classes: list[int], limit: int) -> np.ndarray:
    idx = np.flatnonzero(np.isin(labels, classes))
    return idx[:limit] if limit else idx


class _IdxDataset(ImageDataset):
    def read_split(self, files, split, classes, limit):
        img_name, lab_name = IDX_TRAIN if split == "train" else IDX_TEST
        x, y = read_idx_pair(files[img_name], files[lab_name], self.source)
        idx = _first_of_classes(y, classes, limit)
        return x[idx], y[idx]


class FashionMNIST(_IdxDataset):
    """Two-class Fashion-MNIST, default T-shirt/top (0, label -1) vs trouser (1, +1)."""

    name = "fmnist"
    description = "two-class Fashion-MNIST (default T-shirt/top -1 vs trouser +1)"
    source = FMNIST_SOURCE
    options = _image_options([0, 1], "0 T-shirt/top, 1 trouser, 2 pullover, 3 dress, 4 coat, "
                             "5 sandal, 6 shirt, 7 sneaker, 8 bag, 9 ankle boot")


class MNIST(_IdxDataset):
    """Two-class MNIST, default digits 0 (label -1) vs 1 (+1); optional fallback."""

    name = "mnist"
    description = "two-class MNIST (default digit 0 -1 vs digit 1 +1)"
    source = MNIST_SOURCE
    options = {
        **_image_options([0, 1], "digits"),
        "fallback": Option("none", "if the MNIST files are absent: 'fmnist' loads two-class "
                           "Fashion-MNIST with the same options instead (and says so); "
                           "'none' fails", choices=("none", "fmnist")),
    }

    def load(self) -> Data:
        try:
            return super().load()
        except DataFilesMissing as mnist_error:
            if self.settings["fallback"] != "fmnist":
                raise
            settings = {k: v for k, v in self.settings.items() if k != "fallback"}
            try:
                data = FashionMNIST(settings).load()
            except DataError as fmnist_error:
                raise type(fmnist_error)(f"{mnist_error}\nThe fallback to Fashion-MNIST "
                                         f"failed too: {fmnist_error}") from None
            message = (f"MNIST files not found, so two-class Fashion-MNIST ({data.attrs['classes']}"
                       f", from {data.attrs['folder']}) was used instead of MNIST (dataset."
                       f"fallback = 'fmnist'). Install MNIST for the paper's own dataset.")
            warnings.warn(message, DatasetFallbackWarning, stacklevel=2)
            data.attrs["fallback"] = message
            return data


class CIFAR10(ImageDataset):
    """Two-class CIFAR-10, default airplane (0, label -1) vs automobile (1, +1)."""

    name = "cifar10"
    description = "two-class CIFAR-10 (default airplane -1 vs automobile +1), binary files"
    source = CIFAR_SOURCE
    options = _image_options([0, 1], "0 airplane, 1 automobile, 2 bird, 3 cat, 4 deer, "
                             "5 dog, 6 frog, 7 horse, 8 ship, 9 truck")

    def read_split(self, files, split, classes, limit):
        xs, ys, count = [], [], 0
        for name in (CIFAR_TRAIN if split == "train" else CIFAR_TEST):
            x, y = read_cifar_batch(files[name])
            idx = _first_of_classes(y, classes, limit - count if limit else 0)
            xs.append(x[idx])
            ys.append(y[idx])
            count += idx.size
            if limit and count >= limit:
                break
        return np.concatenate(xs), np.concatenate(ys)


@hookimpl
def phasekit_register_datasets(register):
    register(MNIST)
    register(FashionMNIST)
    register(CIFAR10)


__all__ = ["CIFAR10", "MNIST", "DataFilesMissing", "DatasetFallbackWarning", "FashionMNIST",
           "ImageSource", "candidate_folders", "locate", "read_cifar_batch", "read_idx"]
