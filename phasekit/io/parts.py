"""``OUT.parts/``: the finished chunks of a run in progress, kept so that a killed or
failed run resumes where it stopped.

Every finished chunk is written atomically (temporary file, then rename) into
``OUT.parts/`` next to the output ``OUT``, together with the resolved config.
Parts of this very config are always resumed, never discarded (``--overwrite``
included); parts of a different config are discarded only with ``--overwrite``,
else the run is refused naming the first differing key.  The folder carries
phasekit's marker (:mod:`phasekit.io.files`): a folder of that name phasekit did
not make is refused, and only files phasekit names as its own are ever deleted.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from phasekit.engine.chunks import Chunk, ChunkResult
from phasekit.errors import OutputError, OutputWarning, ResumeError, toml_value
from phasekit.io.files import (
    MARKER,
    MARKER_TEXT,
    atomic_write,
    clean_temporaries,
    create_owned_folder,
    is_owned,
    remove_owned,
    write_failure,
)
from phasekit.model import Bound

PARTS_SUFFIX = ".parts"


def chunk_key(chunk: Chunk) -> str:
    return f"chunk-p{chunk.point:05d}-s{chunk.seed_index:04d}-c{chunk.c_index[0]:05d}"


def fingerprint(config_toml: str) -> str:
    """A short digest of the resolved config: every chunk file names the config it
    belongs to."""
    return hashlib.sha256(config_toml.encode()).hexdigest()[:16]


def save_result(result: ChunkResult, path: Path, config: str | None = None) -> None:
    """Write one chunk's result atomically as an ``.npz`` file (no pickle), carrying its
    identity: its key, the :func:`fingerprint` ``config`` of its config and its shape."""
    meta = {
        "key": chunk_key(result.chunk), "config": config,
        "shape": {n: list(np.shape(a)) for n, a in result.traj.items()},
        "point": result.chunk.point,
        "seed_index": result.chunk.seed_index, "seed": result.chunk.seed,
        "c_index": result.chunk.c_index, "c_values": result.chunk.c_values,
        "lambda0": result.lambda0, "lambda0_hessian": result.lambda0_hessian,
        "bounds": [b.__dict__ for b in result.bounds],
        "extra_dims": {k: list(v) for k, v in result.extra_dims.items()},
        "names": list(result.traj),
    }
    arrays = {"eta": result.eta, "steps": result.steps,
              "status": np.asarray(result.status, dtype=str),
              "meta": np.asarray(json.dumps(meta))}
    for name in result.traj:
        arrays[f"traj__{name}"] = result.traj[name]
        arrays[f"final__{name}"] = result.final[name]

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    atomic_write(path, write)


def load_result(path: Path) -> ChunkResult:
    return _load(path)[0]


def _load(path: Path) -> tuple[ChunkResult, dict]:
    """The chunk's result and its stored identity (``key``, ``config``, ``shape``)."""
    with np.load(path, allow_pickle=False) as npz:
        meta = json.loads(str(npz["meta"]))
        chunk = Chunk(meta["seed_index"], meta["seed"], meta["c_index"], meta["c_values"],
                      meta["point"])
        return ChunkResult(
            chunk=chunk, lambda0=meta["lambda0"],
            bounds=[Bound(**b) for b in meta["bounds"]],
            eta=npz["eta"], traj={n: npz[f"traj__{n}"] for n in meta["names"]},
            final={n: npz[f"final__{n}"] for n in meta["names"]},
            steps=npz["steps"], status=npz["status"].astype(str).astype(object),
            extra_dims={k: tuple(v) for k, v in meta["extra_dims"].items()},
            lambda0_hessian=meta.get("lambda0_hessian", float("nan"))), meta


def mismatch(result: ChunkResult, meta: dict, expected: Chunk, config: str) -> str | None:
    """Why the chunk file of ``result`` is not ``expected``'s chunk of this config (a file
    copied over another, or of another config), or ``None`` when it is.  Files of an
    earlier phasekit carry no key or fingerprint: their chunk and shape are checked."""
    chunk = result.chunk
    if meta.get("key", chunk_key(expected)) != chunk_key(expected) \
            or chunk_key(chunk) != chunk_key(expected):
        return f"it holds {meta.get('key') or chunk_key(chunk)}"
    if meta.get("config") not in (None, config):
        return "it was computed with another config"
    if (chunk.seed, list(chunk.c_index), list(chunk.c_values)) != \
            (expected.seed, list(expected.c_index), list(expected.c_values)):
        return "its seed or learning rates differ from this config's"
    rows = len(expected.c_values)
    shapes = [result.eta.shape[:1], result.status.shape[:1], result.steps.shape[:1],
              *(a.shape[:1] for a in result.traj.values()),
              *(a.shape[:1] for a in result.final.values())]
    stored = meta.get("shape", {n: list(a.shape) for n, a in result.traj.items()})
    if any(shape != (rows,) for shape in shapes) or stored != \
            {n: list(a.shape) for n, a in result.traj.items()}:
        return f"its arrays do not have this chunk's shape ({rows} learning rates)"
    return None


#: Names phasekit writes into a parts folder: the config, chunk files, and their
#: temporaries (current and earlier versions' names).
_OWN_PART = re.compile(
    r"config\.toml|config\.tmp|chunk-(?:p\d+-)?s\d+-c\d+\.npz"
    r"|\.(?:chunk-(?:p\d+-)?s\d+-c\d+\.npz|config\.toml)\.[a-z0-9_]{8}\.(?:part|probe|new)")


def own_part(name: str) -> bool:
    """Whether ``name`` in a parts folder is a file phasekit writes there."""
    return _OWN_PART.fullmatch(name) is not None


class PartStore:
    """The ``OUT.parts/`` folder of finished chunks of one output (module docstring)."""

    def __init__(self, output: Path):
        self.output = Path(output)
        self.folder = self.output.with_name(self.output.name + PARTS_SUFFIX)
        self.manifest = self.folder / "config.toml"
        self.fingerprint: str | None = None      # of the config, once opened

    def _check_owned(self) -> None:
        """Refuse a folder of this name that phasekit did not make.  A folder of an
        earlier phasekit (no marker, but a config and nothing but phasekit's files)
        is adopted."""
        if not self.folder.is_dir() or self.folder.is_symlink():
            raise OutputError(f"{self.folder} exists and is not a folder phasekit made; move "
                              f"it away or choose another -o")
        if is_owned(self.folder):
            return
        names = [p.name for p in self.folder.iterdir()]
        if "config.toml" in names and all(map(own_part, names)):
            (self.folder / MARKER).write_text(MARKER_TEXT)
            return
        raise OutputError(f"{self.folder} exists but was not made by phasekit (no {MARKER} "
                          f"marker); phasekit keeps its partial results there and will not "
                          f"touch this folder: move it away or choose another -o")

    def exists(self) -> bool:
        return os.path.lexists(self.folder)

    def stored_config(self) -> str | None:
        """The config the parts were computed with (``None``: no folder of phasekit's)."""
        if not self.exists() or not is_owned(self.folder) or not self.manifest.is_file():
            return None
        return self.manifest.read_text()

    def chunk_files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.glob("chunk-*.npz") if own_part(p.name))

    def open(self, config_toml: str, overwrite: bool = False,
             expected: list[Chunk] | None = None) -> dict[str, ChunkResult]:
        """Check the stored config and return the finished chunks by key: parts of this
        config are resumed; parts of another are discarded with ``overwrite``, else
        refused (:class:`ResumeError`).  A chunk file that is not the chunk of
        ``expected`` its name says (:func:`mismatch`) is discarded, with a warning."""
        self.fingerprint = fingerprint(config_toml)
        try:
            return self._open(config_toml, overwrite, expected)
        except OSError as exc:
            raise OutputError(f"cannot prepare {self.folder}/ for partial results "
                              f"({write_failure(self.folder, exc)})") from None

    def _open(self, config_toml: str, overwrite: bool, expected: list[Chunk] | None
              ) -> dict[str, ChunkResult]:
        clean_temporaries(self.folder, own_part)    # a folder a killed run was creating
        if not self.exists():
            create_owned_folder(self.folder, {"config.toml": config_toml})
            return {}
        self._check_owned()
        for path in self.folder.iterdir():       # temporaries of a killed chunk write
            if path.name.startswith(".") and path.name.endswith(".part") \
                    and own_part(path.name):
                path.unlink(missing_ok=True)
        stored = self.manifest.read_text() if self.manifest.is_file() else None
        if stored is not None and stored != config_toml:
            if not overwrite:
                raise ResumeError(
                    f"{self.folder} holds partial results of a different config "
                    f"({config_difference(stored, config_toml)}); rerun with the same config "
                    f"to resume, choose another -o, or pass --overwrite to discard them")
            # Chunks first, then the config: a kill in between leaves a config that
            # matches no chunk, never old chunks under the new config.
            for path in self.chunk_files():
                path.unlink()
            stored = None
        if stored is None:
            atomic_write(self.manifest, lambda tmp: tmp.write_text(config_toml))
        return self._load_chunks({chunk_key(c): c for c in expected or ()})

    def _load_chunks(self, expected: dict[str, Chunk]) -> dict[str, ChunkResult]:
        done, wrong = {}, []
        for path in self.chunk_files():
            try:
                result, meta = _load(path)
            except Exception:  # noqa: BLE001 - a torn file is recomputed, never trusted
                path.unlink(missing_ok=True)
                continue
            if path.stem not in expected:
                continue
            why = mismatch(result, meta, expected[path.stem], self.fingerprint)
            if why is None:
                done[path.stem] = result
            else:
                wrong.append(f"{path.name} ({why})")
                path.unlink(missing_ok=True)
        if wrong:
            warnings.warn(OutputWarning(
                f"discarded {len(wrong)} chunk file(s) in {self.folder}/ that are not the "
                f"chunk their name says, to be recomputed: {'; '.join(wrong[:3])}"
                f"{'; ...' if len(wrong) > 3 else ''}"), stacklevel=3)
        return done

    def save(self, result: ChunkResult) -> None:
        save_result(result, self.folder / f"{chunk_key(result.chunk)}.npz",
                    self.fingerprint)

    def remove(self) -> None:
        """Delete phasekit's files and the folder; files someone else put there stay
        (with a warning)."""
        if not self.exists():
            return
        left = remove_owned(self.folder, own_part)
        if left:
            warnings.warn(OutputWarning(
                f"kept {self.folder}/: it holds files phasekit did not write "
                f"({', '.join(left[:5])}{', ...' if len(left) > 5 else ''})"), stacklevel=2)

    def forget_if_empty(self) -> None:
        """Remove the folder if it holds no finished chunk (a run that failed early)."""
        if self.folder.is_dir() and is_owned(self.folder) and not self.chunk_files():
            remove_owned(self.folder, own_part)


def _flatten(table: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def config_difference(stored: str, now: str) -> str:
    """Every key whose value differs between two config texts, with both values
    (``sweep.seeds: stored [0, 1], now [0, 1, 2, 3]; ...``), compared as parsed TOML."""
    try:
        old, new = _flatten(tomllib.loads(stored)), _flatten(tomllib.loads(now))
    except tomllib.TOMLDecodeError:
        return "the stored config is not TOML"
    keys = [*old, *(k for k in new if k not in old)]
    changed = [f"{key}: stored {_shown(old.get(key, _ABSENT))}, now "
               f"{_shown(new.get(key, _ABSENT))}"
               for key in keys if old.get(key, _ABSENT) != new.get(key, _ABSENT)]
    return "; ".join(changed) or "the same keys and values, written differently"


_ABSENT = object()


def _shown(value) -> str:
    text = "(absent)" if value is _ABSENT else toml_value(value)
    return text if len(text) <= 200 else text[:200] + "..."


def refuse_replacing(path: str | os.PathLike, overwrite: bool, same: Callable[[object], bool],
                     config_toml: str | None = None) -> bool:
    """The rule of every subcommand's ``-o`` (``run``, ``analyze``, ``boundary``): may the
    existing ``path`` be replaced?  Returns ``True`` when it holds this very result
    (``same(ds)`` of the stored sweep), ``False`` when there is nothing there or
    ``overwrite``; else refuses (:class:`OutputError`): a sweep of another config
    (every changed key named, given ``config_toml``) or a file that is not a sweep.
    Where ``OUT.parts/`` holds chunks of ``config_toml`` (an interrupted
    ``--overwrite`` run) the line says that ``--overwrite`` resumes them."""
    from phasekit.errors import SweepFileError
    from phasekit.io.netcdf import open_sweep

    path = Path(path)
    if overwrite or not os.path.lexists(path):
        return False
    store = PartStore(path)
    if config_toml is not None and store.stored_config() == config_toml \
            and store.chunk_files():
        then = (f"; {store.folder}/ holds {len(store.chunk_files())} finished chunks of "
                f"this config (an interrupted run): pass --overwrite to resume them and "
                f"replace {path}")
    else:
        then = "; choose another -o, or pass --overwrite to replace it"
    try:
        with open_sweep(path, load=False) as old:
            if same(old):
                return True
            stored = old.attrs.get("config")
    except SweepFileError as exc:
        raise OutputError(f"output {path} exists and is not a phasekit sweep ({exc}){then}"
                          ) from None
    diff = (f" ({config_difference(stored, config_toml)})"
            if config_toml is not None and isinstance(stored, str) else "")
    raise OutputError(f"output {path} exists and holds a sweep of a different config{diff}"
                      f"{then}")
