"""Hostile inputs and interruptions: each ends in one clear line, nothing finished is
lost and nothing that is not phasekit's is touched (docs/reliability.md)."""

from __future__ import annotations

import errno
import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from phasekit.analysis.phases import add_critical
from phasekit.cli.analysis import main as analysis_main
from phasekit.cli.main import main
from phasekit.config.limits import MEMORY_LIMIT_ENV
from phasekit.config.resolve import build_config, resolve_config
from phasekit.engine.chunks import make_chunks
from phasekit.engine.engine import Engine
from phasekit.engine.points import PointEngines
from phasekit.errors import OutputWarning, ResumeError, SweepFileError
from phasekit.io import files
from phasekit.io import netcdf as netcdf_io
from phasekit.io.files import OutputLock
from phasekit.io.netcdf import open_sweep, write_sweep
from phasekit.io.parts import PartStore, save_result
from phasekit.runner.execute import check_dataset_size, execute

from .helpers import killed_run, stored

EXE = os.path.join(os.path.dirname(sys.executable), "phasekit")

CONFIG = """\
[model]
name = "quadratic"
width = 40
eigen_low = 1.0
eigen_high = 2.0
activation = "identity"

[dataset]
name = "toy"

[sweep]
eta_lambda0 = [0.5, 2.5, 3.5, 6.0]
seeds = [0, 1, 2]
chunk_size = 2
max_steps = 2000
"""
N_CHUNKS = 6
#: the function that puts a sweep's bytes on disk (inside the atomic write), patched below
_WRITE_NETCDF4 = netcdf_io._write_netcdf4


# -- helpers ------------------------------------------------------------------------------

def one_line(err: str, kind: str = "error") -> str:
    """The single line on stderr, checked to be phasekit's ``kind`` line."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"phasekit: {kind}"), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def cfg(tmp_path) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def reference(manager, cfg):
    config, data = resolve_config(build_config(str(cfg)), manager)
    return execute(config, data, manager, derive=add_critical)


@pytest.fixture
def counted(monkeypatch):
    """The keys of the chunks trained in this process, in order."""
    calls = []
    original = Engine.run_batch

    def counting(self, batch, progress=None, **kw):
        calls.extend((chunk.point, chunk.seed_index, chunk.c_index[0]) for chunk in batch)
        return original(self, batch, progress, **kw)

    monkeypatch.setattr(Engine, "run_batch", counting)
    return calls


def run(cfg, out, *extra) -> int:
    return main(["run", str(cfg), "-q", "-o", str(out), *extra])


def leftovers(folder: Path) -> list[str]:
    """phasekit's temporaries and locks in ``folder`` (there should be none)."""
    return sorted(p.name for p in folder.iterdir()
                  if p.name.endswith((".part", ".probe", ".new", ".lock")))


# -- 1. the learning-rate grid, through the command line -------------------------------------

@pytest.mark.parametrize("value, message", [
    ("{start=-1,stop=1,num=3}", "must be positive and finite"),
    ("{start=nan,stop=1,num=2}", "sweep.eta_lambda0.start must be a finite number, got nan"),
    ("{start=1,stop=1,num=3}", "repeats the value(s) [1.0]"),
    ('{start="a",stop=1,num=3}', "sweep.eta_lambda0.start must be a finite number, got"),
])
def test_bad_grid_is_one_line(tmp_path, capsys, counted, value, message):
    out = tmp_path / "g.nc"
    assert main(["run", "--preset", "fig6", "--set", f"sweep.eta_lambda0={value}", "-q",
                 "-o", str(out)]) == 2
    assert message in one_line(capsys.readouterr().err)
    assert not counted and list(tmp_path.iterdir()) == []


def test_decreasing_grid_is_stored_increasing(tmp_path):
    out = tmp_path / "g.nc"
    assert main(["run", "--preset", "fig6", "--set", "sweep.eta_lambda0=[3.0, 1.0, 2.0]",
                 "--set", "sweep.max_steps=300", "-q", "-o", str(out)]) == 0
    ds = open_sweep(out)
    assert ds.eta_lambda0.values.tolist() == [1.0, 2.0, 3.0]
    # every stored eta belongs to its coordinate: eta * lambda0 = c
    np.testing.assert_allclose(ds.eta.values * ds.lambda0.values[:, None],
                               np.broadcast_to(ds.eta_lambda0.values, ds.eta.shape), rtol=1e-12)


# -- 3. outputs that cannot be written: refused before any training --------------------------

def test_output_under_proc_is_refused_before_training(tmp_path, cfg, capsys, counted):
    if not os.path.isdir("/proc/self"):
        pytest.skip("no /proc")
    assert run(cfg, "/proc/x.nc") == 2
    line = one_line(capsys.readouterr().err)
    assert "cannot write output /proc/x.nc" in line
    assert not counted and not os.path.exists("/proc/x.nc.parts")


def test_output_whose_parent_is_a_file(tmp_path, cfg, capsys, counted):
    (tmp_path / "somefile").write_text("mine")
    assert run(cfg, tmp_path / "somefile" / "x.nc") == 2
    assert f"{tmp_path / 'somefile'} is not a folder" in one_line(capsys.readouterr().err)
    assert not counted and (tmp_path / "somefile").read_text() == "mine"


def test_directory_as_output_is_refused_even_with_overwrite(tmp_path, cfg, capsys, counted):
    folder = tmp_path / "existing_directory"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    assert run(cfg, folder, "--overwrite") == 2
    assert "is a folder" in one_line(capsys.readouterr().err)
    assert not counted and [p.name for p in folder.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml", "existing_directory"]


def test_device_as_output_is_refused(cfg, capsys, counted):
    """As root, renaming over /dev/null would replace the device."""
    if not os.path.exists("/dev/null"):
        pytest.skip("no /dev/null")
    assert run(cfg, "/dev/null", "--overwrite") == 2
    assert "not a regular file" in one_line(capsys.readouterr().err)
    assert not counted and not Path("/dev/null").is_file()


def test_unreachable_scheduler_is_one_line_and_leaves_nothing(tmp_path, cfg, capsys, counted,
                                                             monkeypatch):
    pytest.importorskip("dask.distributed")
    import phasekit.runner.dask as dask_runner

    monkeypatch.setattr(dask_runner, "CONNECT_TIMEOUT", 1)
    out = tmp_path / "s.nc"
    assert run(cfg, out, "--scheduler", "tcp://127.0.0.1:1") == 2
    line = one_line(capsys.readouterr().err)
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:1 within 1 s" in line
    assert not counted and [p.name for p in tmp_path.iterdir()] == ["c.toml"]


# -- 4. two runs on one output; stale locks --------------------------------------------------

def _hold_lock(out: Path) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom phasekit.io.files import OutputLock\n"
         "OutputLock(sys.argv[1]).acquire()\nprint('locked', flush=True)\ntime.sleep(600)\n",
         str(out)], stdout=subprocess.PIPE)
    assert holder.stdout.readline().strip() == b"locked"
    return holder


def test_live_lock_refuses_and_a_killed_holders_lock_is_taken_over(tmp_path, cfg, capsys,
                                                                   counted):
    out = tmp_path / "r.nc"
    holder = _hold_lock(out)
    stale_tmp = tmp_path / ".r.nc.k3x9_0ab.part"        # the holder's final write, say
    stale_tmp.write_bytes(b"CDF torn")
    try:
        assert run(cfg, out) == 2
        line = one_line(capsys.readouterr().err)
        assert f"{out} is being written by another phasekit run (pid {holder.pid} on " in line
        assert not counted and not out.exists()
        assert stale_tmp.exists()                   # the holder's business, not ours
        info = json.loads(files.lock_path(out).read_text())
        assert info["pid"] == holder.pid             # its lock file is untouched
    finally:
        holder.kill()
        holder.wait()
    assert files.lock_path(out).exists()          # left behind by SIGKILL: stale
    assert run(cfg, out) == 0                        # taken over
    assert len(counted) == N_CHUNKS and out.exists()
    assert not stale_tmp.exists() and leftovers(tmp_path) == []


def test_lock_file_names_this_process_and_is_reentrant(tmp_path):
    out = tmp_path / "x.nc"
    with OutputLock(out):
        with OutputLock(out):
            info = json.loads(files.lock_path(out).read_text())
            assert info["pid"] == os.getpid() and info["host"] and info["started"]
        assert files.lock_path(out).exists()      # still held by the outer one
        assert f"pid {os.getpid()} on " in files.lock_holder(out)
    assert not files.lock_path(out).exists()


# -- 5. a killed --overwrite run resumes ------------------------------------------------------

def test_killed_overwrite_run_resumes(manager, tmp_path, cfg, capsys, counted):
    out = tmp_path / "r.nc"
    assert run(cfg, out, "--set", "sweep.max_steps=50") == 0          # an older sweep
    before = out.read_bytes()
    # `run cfg --overwrite` killed after four chunks: the first batch (three seeds) and
    # seed 0's chunk of the second; their files exist, nothing else.
    config, data = resolve_config(build_config(str(cfg)), manager)
    first = make_chunks(config.sweep)[1]                     # seed 0, the second batch
    store = killed_run(config, data, manager, out,
                       lambda c: c.c_index[0] == 0 or _key(c) == _key(first), overwrite=True)
    counted.clear()
    capsys.readouterr()

    assert run(cfg, out) == 2                        # the old output is not replaced silently
    line = one_line(capsys.readouterr().err)
    assert "holds a sweep of a different config (sweep.max_steps: stored 50, now 2000)" in line
    assert "holds 4 finished chunks of this config" in line and "--overwrite to resume" in line
    assert out.read_bytes() == before and len(store.chunk_files()) == 4 and not counted

    assert run(cfg, out, "--overwrite") == 0        # the same command resumes
    assert len(counted) == 3                         # the unfinished batch, trained whole
    xr.testing.assert_identical(stored(out),
                                execute(config, data, manager, derive=add_critical))
    assert not store.folder.exists()


def _key(chunk):
    from phasekit.io.parts import chunk_key

    return chunk_key(chunk)


def test_parts_of_another_config_are_discarded_only_with_overwrite(manager, tmp_path, cfg,
                                                                   capsys, counted):
    out = tmp_path / "r.nc"
    other, data = resolve_config(build_config(str(cfg), overrides=["sweep.max_steps=50"]),
                                 manager)
    store = PartStore(out)
    store.open(other.to_toml())
    store.save(Engine(other, data, manager).run_chunk(make_chunks(other.sweep)[0]))
    counted.clear()
    assert run(cfg, out) == 2
    assert "(sweep.max_steps: stored 50, now 2000)" in one_line(capsys.readouterr().err)
    assert len(store.chunk_files()) == 1 and not counted
    assert run(cfg, out, "--overwrite") == 0
    assert len(counted) == N_CHUNKS and not store.folder.exists()


# -- 6. temporaries of a killed final write ----------------------------------------------------

@pytest.mark.slow
def test_temporary_of_a_sigkilled_final_write_is_cleaned(tmp_path, cfg, counted):
    out = tmp_path / "r.nc"
    killer = ("import os, signal, sys\nimport xarray as xr\nfrom phasekit.io import netcdf\n"
              "def write(ds, path):\n"
              "    open(path, 'wb').write(b'CDF half written')\n"
              "    os.kill(os.getpid(), signal.SIGKILL)\n"
              "netcdf._write_netcdf4 = write\n"
              "netcdf.write_sweep(xr.Dataset(), sys.argv[1])\n")
    proc = subprocess.run([sys.executable, "-c", killer, str(out)], timeout=120)
    assert proc.returncode == -signal.SIGKILL
    stale = glob.glob(str(tmp_path / ".r.nc.*.part"))
    assert len(stale) == 1                                   # what the kill left
    others = [tmp_path / ".r.nc.notmine.part", tmp_path / ".q.nc.abcdefgh.part",
              tmp_path / "r.nc.abcdefgh.part", tmp_path / ".r.nc.abcdefgh.partx"]
    for path in others:
        path.write_text("someone else's")
    assert run(cfg, out) == 0
    assert not os.path.exists(stale[0])
    assert all(p.read_text() == "someone else's" for p in others)  # not phasekit's pattern
    assert out.exists()


# -- 7. Ctrl-C ------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["_build_parser", "get_plugin_manager"])
def test_ctrl_c_at_start_up_is_one_line(tmp_path, cfg, capsys, monkeypatch, where):
    import phasekit.cli.main as cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, where, interrupted)
    before = signal.getsignal(signal.SIGINT)
    assert run(cfg, tmp_path / "r.nc") == 130
    assert one_line(capsys.readouterr().err, "interrupted") == \
        "phasekit: interrupted; nothing was written"
    assert signal.getsignal(signal.SIGINT) is before
    assert [p.name for p in tmp_path.iterdir()] == ["c.toml"]


@pytest.mark.parametrize("argv0, rc, line", [
    ("phasekit", 130, "phasekit: interrupted; nothing was written"),
    ("python", -signal.SIGINT, "KeyboardInterrupt"),  # a library importing phasekit: untouched
])
def test_ctrl_c_from_the_first_line_of_import_phasekit(argv0, rc, line):
    """The command answers Ctrl-C from the first line of ``import phasekit`` on, before
    the command line module or any heavy library is imported."""
    code = ("import os, signal, sys, time\n"
            f"sys.argv[0] = {argv0!r}\n"
            "import phasekit\n"
            "assert 'phasekit.cli.main' not in sys.modules and 'torch' not in sys.modules\n"
            "os.kill(os.getpid(), signal.SIGINT)\n"
            "time.sleep(30)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == rc
    assert proc.stderr.strip().splitlines()[-1] == line


def _interrupt_at(monkeypatch, n: int, counted: list):
    """Ctrl-C as the ``n``-th batch of chunks from now starts (1-based)."""
    trained = Engine.run_batch                          # already the counting one
    started = []

    def run_batch(self, batch, progress=None, **kw):
        started.append(batch)
        if len(started) == n:
            raise KeyboardInterrupt
        return trained(self, batch, progress, **kw)

    monkeypatch.setattr(Engine, "run_batch", run_batch)
    return started


def test_ctrl_c_mid_sweep_says_what_is_kept_and_resumes(tmp_path, cfg, capsys, monkeypatch,
                                                        counted, reference):
    out = tmp_path / "r.nc"
    started = _interrupt_at(monkeypatch, 2, counted)
    assert run(cfg, out) == 130
    line = one_line(capsys.readouterr().err, "interrupted")
    parts = PartStore(out).folder
    kept = len(started[0])               # the chunks of the first batch (one or more seeds)
    assert 1 <= kept < N_CHUNKS
    assert line == (f"phasekit: interrupted; {kept} of {N_CHUNKS} chunks are kept in "
                    f"{parts}/; rerun the same command to resume")
    assert len(PartStore(out).chunk_files()) == kept and not out.exists()
    monkeypatch.undo()
    assert main(["run", str(cfg), "-o", str(out)]) == 0
    assert f"resuming: {2 * kept} of 12 grid points already done" in capsys.readouterr().err
    xr.testing.assert_identical(stored(out), reference)
    assert leftovers(tmp_path) == [] and not parts.exists()


def test_ctrl_c_before_the_first_chunk_leaves_nothing(tmp_path, cfg, capsys, monkeypatch,
                                                      counted):
    out = tmp_path / "r.nc"
    _interrupt_at(monkeypatch, 1, counted)
    assert run(cfg, out) == 130
    assert one_line(capsys.readouterr().err, "interrupted") == \
        f"phasekit: interrupted; no finished chunk is kept; {out} is unchanged"
    assert [p.name for p in tmp_path.iterdir()] == ["c.toml"]


def test_ctrl_c_during_the_final_write_keeps_every_chunk(tmp_path, cfg, capsys, monkeypatch,
                                                         counted, reference):
    out = tmp_path / "r.nc"

    def write(ds, path):
        Path(path).write_bytes(b"CDF half")
        raise KeyboardInterrupt

    monkeypatch.setattr(netcdf_io, "_write_netcdf4", write)
    assert run(cfg, out) == 130
    assert one_line(capsys.readouterr().err, "interrupted") == (
        f"phasekit: interrupted; all {N_CHUNKS} chunks are kept in {PartStore(out).folder}/; "
        f"rerun the same command to write r.nc without recomputing them")
    assert not out.exists() and leftovers(tmp_path) == []
    monkeypatch.setattr(netcdf_io, "_write_netcdf4", _WRITE_NETCDF4)
    counted.clear()
    assert run(cfg, out) == 0
    assert counted == [] and out.exists()
    xr.testing.assert_identical(stored(out), reference)


@pytest.mark.slow
def test_second_run_refused_then_ctrl_c_with_workers_is_one_line(tmp_path):
    """A real ``phasekit run --workers 2``: a second run on its output is refused, naming
    it; Ctrl-C (SIGINT to the whole process group, as a terminal sends it) ends it with
    one line and no Dask noise; the same command resumes."""
    pytest.importorskip("dask.distributed")
    # 16 one-run batches of ~1-2 s each, so that Ctrl-C comes mid-sweep
    args = ["run", "--preset", "fig1", "--set",
            "sweep.eta_lambda0={start=0.5,stop=3.5,num=4}", "--set", "sweep.seeds=4",
            "--set", "sweep.chunk_size=1", "--set", "sweep.seed_batch=1",
            "--set", "sweep.tol=0.0", "--set", "sweep.max_steps=20000", "-q"]
    out = tmp_path / "w.nc"
    parts = PartStore(out).folder
    proc = subprocess.Popen([EXE, *args, "--workers", "2", "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.time() + 240
        while len(PartStore(out).chunk_files()) < 1 and proc.poll() is None \
                and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1].decode()
        second = subprocess.run([EXE, *args, "-o", str(out)], capture_output=True, text=True,
                                timeout=120)
        assert second.returncode == 2
        assert f"(pid {proc.pid} on " in one_line(second.stderr)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130
    line = one_line(err.decode(), "interrupted")
    kept = len(PartStore(out).chunk_files())
    assert kept >= 1 and line == (f"phasekit: interrupted; {kept} of 16 chunks are kept in "
                                  f"{parts}/; rerun the same command to resume")
    resumed = subprocess.run([EXE, *args[:-1], "-o", str(out)], capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming: {kept} of 16 grid points already done" in resumed.stderr
    assert out.exists() and not parts.exists() and leftovers(tmp_path) == []


# -- 8. modes, replacing outputs, foreign folders ----------------------------------------------

@pytest.mark.parametrize("umask, mode", [(0o027, 0o640), (0o002, 0o664)])
def test_outputs_follow_the_umask(tmp_path, cfg, umask, mode):
    old = os.umask(umask)
    try:
        assert run(cfg, tmp_path / "r.nc") == 0
        assert analysis_main(["analyze", str(tmp_path / "r.nc"), "-o",
                              str(tmp_path / "a.nc")]) == 0
    finally:
        os.umask(old)
    assert (tmp_path / "r.nc").stat().st_mode & 0o777 == mode
    assert (tmp_path / "a.nc").stat().st_mode & 0o777 == mode


def test_in_place_keeps_the_files_mode(tmp_path, cfg):
    out = tmp_path / "r.nc"
    assert run(cfg, out) == 0
    os.chmod(out, 0o604)
    assert analysis_main(["analyze", str(out), "--in-place"]) == 0
    assert "phase" in open_sweep(out) and out.stat().st_mode & 0o777 == 0o604


def test_analyze_does_not_replace_another_sweep(tmp_path, cfg, capsys):
    a, c = tmp_path / "a.nc", tmp_path / "c.nc"
    assert run(cfg, a) == 0
    assert run(cfg, c, "--set", "sweep.max_steps=50") == 0
    before = c.read_bytes()
    capsys.readouterr()
    assert analysis_main(["analyze", str(a), "-o", str(c)]) == 2
    assert "output" in one_line(capsys.readouterr().err) and c.read_bytes() == before
    (tmp_path / "notes.nc").write_text("my notes")
    assert analysis_main(["analyze", str(a), "-o", str(tmp_path / "notes.nc")]) == 2
    assert "is not a phasekit sweep" in one_line(capsys.readouterr().err)
    assert (tmp_path / "notes.nc").read_text() == "my notes"
    assert analysis_main(["analyze", str(a), "-o", str(c), "--overwrite"]) == 0
    assert "phase" in open_sweep(c)
    assert analysis_main(["analyze", str(a), "-o", str(c)]) == 0       # the same sweep: fine
    capsys.readouterr()
    assert analysis_main(["analyze", str(a), "-o", str(tmp_path)]) == 2
    assert "is a folder" in one_line(capsys.readouterr().err)


def test_foreign_parts_folder_is_refused_and_untouched(tmp_path, cfg, capsys, counted):
    out = tmp_path / "r.nc"
    folder = PartStore(out).folder
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    for extra in ([], ["--overwrite"]):
        assert run(cfg, out, *extra) == 2
        assert "was not made by phasekit" in one_line(capsys.readouterr().err)
        assert [p.name for p in folder.iterdir()] == ["thesis.tex"]
    assert not counted and not out.exists()


def test_files_someone_else_put_in_the_parts_folder_are_kept(manager, tmp_path, cfg, capsys):
    out = tmp_path / "r.nc"
    config, _ = resolve_config(build_config(str(cfg)), manager)
    store = PartStore(out)
    store.open(config.to_toml())
    (store.folder / "notes.txt").write_text("mine")
    assert run(cfg, out) == 0
    assert one_line(capsys.readouterr().err, "warning") == (
        f"phasekit: warning: kept {store.folder}/: it holds files phasekit did not write "
        f"(notes.txt)")
    with pytest.warns(OutputWarning, match=r"did not write \(notes.txt\)"):
        store.remove()                                   # the API warns the same way
    assert (store.folder / "notes.txt").read_text() == "mine" and out.exists()
    assert sorted(p.name for p in store.folder.iterdir()) == [".phasekit", "notes.txt"]
    stamp = out.stat().st_mtime_ns
    assert run(cfg, out) == 0                            # finished: nothing to do
    assert out.stat().st_mtime_ns == stamp


def test_parts_folder_of_an_earlier_version_is_resumed(manager, tmp_path, cfg, counted):
    """Folders written before the marker existed: a config and phasekit's files only."""
    out = tmp_path / "r.nc"
    config, data = resolve_config(build_config(str(cfg)), manager)
    folder = PartStore(out).folder
    folder.mkdir()
    (folder / "config.toml").write_text(config.to_toml())
    engines = PointEngines(config, data, manager)
    batch = engines.batches(engines.chunks())[0]                 # three seeds' chunks
    for result in engines[0].run_batch(batch):
        save_result(result, folder / f"{_key(result.chunk)}.npz")
    counted.clear()
    assert run(cfg, out) == 0
    assert len(counted) == N_CHUNKS - len(batch) == 3 and not folder.exists()


# -- beyond the list: sizes, full disks, crafted files ------------------------------------------

def test_dataset_size_estimate_is_exact(manager, cfg):
    config, data = resolve_config(build_config(str(cfg), overrides=["sweep.tol=0.0",
                                                                   "sweep.max_steps=300"]),
                                  manager)
    ds = execute(config, data, manager, derive=add_critical)
    assert ds.sizes["step"] == len(Engine(config, data, manager).schedule)   # not trimmed
    stored = sum(ds[v].nbytes for v in ds.data_vars if "step" in ds[v].dims)
    assert check_dataset_size(config, PointEngines(config, data, manager)) == stored


def test_too_large_a_sweep_is_refused_up_front(tmp_path, capsys, counted, monkeypatch):
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "0.01")
    chunked = []
    monkeypatch.setattr(PointEngines, "chunks", lambda self: chunked.append(1) or [])
    out = tmp_path / "big.nc"
    assert main(["run", "--preset", "fig6", "--set", "sweep.seeds=100000", "-q",
                 "-o", str(out)]) == 2
    line = one_line(capsys.readouterr().err)
    assert "this sweep's trajectories would take" in line
    assert "100000 seed(s) x 23 learning rate(s) x" in line and "x 8 bytes" in line
    assert "10.2 MiB, set by PHASEKIT_MEMORY_LIMIT_GIB" in line
    assert "sweep.record_per_decade" in line
    assert not counted and not chunked and list(tmp_path.iterdir()) == []


def test_full_disk_during_a_chunk_write_keeps_the_finished_chunks(tmp_path, cfg, capsys,
                                                                  monkeypatch, counted,
                                                                  reference):
    out = tmp_path / "r.nc"
    writes = []
    savez = np.savez

    def full(fh, **arrays):
        writes.append(1)
        if len(writes) == 3:
            fh.write(b"PK\x03\x04 half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return savez(fh, **arrays)

    monkeypatch.setattr(np, "savez", full)
    assert run(cfg, out) == 2
    line = one_line(capsys.readouterr().err)
    parts = PartStore(out).folder
    assert f"cannot save a finished chunk in {parts}/ (No space left on device" in line
    assert line.endswith(f"2 of {N_CHUNKS} chunks are kept in {parts}/; rerun the same "
                         f"command to resume")
    assert len(PartStore(out).chunk_files()) == 2 and leftovers(parts) == []
    monkeypatch.setattr(np, "savez", savez)
    counted.clear()
    assert run(cfg, out) == 0
    # the two chunks kept belong to the first batch (three seeds), which is trained whole
    # again with the third, as the uninterrupted run trained it; then the second batch
    assert len(counted) == N_CHUNKS
    xr.testing.assert_identical(stored(out), reference)


def test_full_disk_during_the_final_write_keeps_every_chunk(tmp_path, cfg, capsys, monkeypatch,
                                                            counted, reference):
    out = tmp_path / "r.nc"

    def full(ds, path):
        Path(path).write_bytes(b"CDF half")
        raise RuntimeError("NetCDF: HDF error")            # what netCDF says on ENOSPC

    monkeypatch.setattr(netcdf_io, "_write_netcdf4", full)
    assert run(cfg, out) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"phasekit: error: cannot write {out} (RuntimeError: NetCDF: HDF "
                           f"error")
    assert line.endswith(f"all {N_CHUNKS} chunks are kept in {PartStore(out).folder}/; rerun "
                         f"the same command to write r.nc without recomputing them")
    assert not out.exists() and leftovers(tmp_path) == []
    monkeypatch.setattr(netcdf_io, "_write_netcdf4", _WRITE_NETCDF4)
    counted.clear()
    assert run(cfg, out) == 0
    assert counted == []
    xr.testing.assert_identical(stored(out), reference)


def test_crafted_huge_netcdf_is_refused_before_loading(tmp_path, capsys):
    netCDF4 = pytest.importorskip("netCDF4")
    path = tmp_path / "huge.nc"
    with netCDF4.Dataset(path, "w") as f:
        f.phasekit_version = "0.1"
        f.config = "[sweep]\n"
        f.createDimension("seed", 10 ** 6)
        f.createDimension("eta_lambda0", 10 ** 6)
        f.createVariable("loss", "f8", ("seed", "eta_lambda0"), chunksizes=(1000, 1000))
    assert path.stat().st_size < 100_000                   # a small file claiming 7 TiB
    for argv in (["analyze", str(path)], ["plot", str(path), "-o", str(tmp_path / "h.png")]):
        assert main(argv) == 2
        assert "declares variables of 7.3 TiB in all" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "h.png").exists()


def test_netcdf_groups_are_ignored_and_non_sweeps_refused(manager, tmp_path, cfg, capsys):
    netCDF4 = pytest.importorskip("netCDF4")
    path = tmp_path / "g.nc"
    config, data = resolve_config(build_config(str(cfg)), manager)
    ds = execute(config, data, manager, derive=add_critical)
    write_sweep(ds, path)
    with netCDF4.Dataset(path, "a") as f:                  # 50 nested groups, a big one deep
        group = f
        for _ in range(50):
            group = group.createGroup("g")
        group.createDimension("x", 10 ** 7)
        group.createDimension("y", 10 ** 7)
        group.createVariable("bomb", "f8", ("x", "y"), chunksizes=(100, 100))
    xr.testing.assert_identical(stored(path), ds)
    bad = tmp_path / "bad.nc"
    xr.Dataset({"a": ("x", [1.0])}, attrs={"phasekit_version": "1",
                                          "config": "not = toml = at all"}).to_netcdf(bad)
    with pytest.raises(SweepFileError, match="config attribute is not a TOML document"):
        open_sweep(bad)
    with pytest.raises(SweepFileError, match="is not a file"):
        open_sweep(tmp_path)
    assert main(["analyze", str(bad)]) == 2
    one_line(capsys.readouterr().err)


@pytest.mark.parametrize("args, match", [
    (["--set", "sweep.seeds=100000000"], "sweep.seeds asks for 100,000,000 values"),
    (["--set", "sweep.eta_lambda0={start=1,stop=2,num=1000000000}"],
     "sweep.eta_lambda0.num asks for 1,000,000,000 values"),
    (["--axis", "model.width=[" + ",".join(["2"] * 100_001) + "]"],
     'sweep.axes."model.width" asks for 100,001 values'),
])
def test_huge_counts_are_refused_before_any_list_is_built(capsys, tmp_path, args, match):
    out = tmp_path / "never.nc"
    assert main(["run", *args, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1
    assert not out.exists()


def test_a_config_that_is_not_a_small_regular_file_is_refused(capsys, tmp_path):
    big = tmp_path / "big.toml"
    big.write_text("# padding\n" * 200_000)
    for path, match in (("/dev/zero", "is not a regular file"), (str(tmp_path), "is not a "
                        "regular file"), (str(big), "a config is a small TOML file")):
        assert main(["run", path, "-o", str(tmp_path / "never.nc")]) == 2
        assert match in capsys.readouterr().err


# -- issue 19: hardening, second pass ----------------------------------------------------------

def test_lock_never_follows_a_link_nor_replaces_a_file_it_did_not_write(tmp_path, cfg, capsys,
                                                                       counted):
    precious = tmp_path / "p.txt"
    precious.write_text("PRECIOUS\n")
    out = tmp_path / "x.nc"
    files.lock_path(out).symlink_to(precious)
    assert run(cfg, out) == 2
    assert "x.nc.lock exists and is not a regular file" in one_line(capsys.readouterr().err)
    assert precious.read_text() == "PRECIOUS\n" and files.lock_path(out).is_symlink()
    mine = tmp_path / "y.nc"
    files.lock_path(mine).write_text("my notes\n")
    assert run(cfg, mine) == 2
    assert "y.nc.lock exists but was not written by phasekit" in \
        one_line(capsys.readouterr().err)
    assert files.lock_path(mine).read_text() == "my notes\n"
    assert not counted and not out.exists() and not mine.exists()
    empty = tmp_path / "z.nc"                       # a killed run's lock, before it wrote
    files.lock_path(empty).write_text("")
    with OutputLock(empty):
        assert json.loads(files.lock_path(empty).read_text())["pid"] == os.getpid()
    assert not files.lock_path(empty).exists()


def test_temporaries_are_created_without_following_links(tmp_path, monkeypatch):
    precious = tmp_path / "p.txt"
    precious.write_text("PRECIOUS\n")
    monkeypatch.setattr(files.secrets, "token_hex", lambda n: "abcdefgh")
    (tmp_path / ".x.nc.abcdefgh.part").symlink_to(precious)
    with pytest.raises(FileExistsError):
        files.atomic_write(tmp_path / "x.nc", lambda tmp: tmp.write_text("new"))
    assert precious.read_text() == "PRECIOUS\n"


def test_a_chunk_file_copied_over_another_is_recomputed(manager, tmp_path, cfg, capsys,
                                                        counted, reference):
    out = tmp_path / "r.nc"
    config, data = resolve_config(build_config(str(cfg)), manager)
    store = PartStore(out)
    store.open(config.to_toml())
    engine = Engine(config, data, manager)
    chunks = make_chunks(config.sweep)
    for chunk in chunks:
        store.save(engine.run_chunk(chunk))
    folder = store.folder
    (folder / f"{_key(chunks[4])}.npz").write_bytes((folder / f"{_key(chunks[0])}.npz")
                                                    .read_bytes())
    counted.clear()
    assert run(cfg, out) == 0
    line = one_line(capsys.readouterr().err, "warning")
    assert f"{_key(chunks[4])}.npz (it holds {_key(chunks[0])})" in line
    # the chunk is recomputed in its batch, trained whole as the uninterrupted run did
    engines = PointEngines(config, data, manager)
    batch = next(b for b in engines.batches(engines.chunks()) if chunks[4] in b)
    assert sorted(counted) == sorted((0, c.seed_index, c.c_index[0]) for c in batch)
    got = open_sweep(out)
    assert (got.status != "pending").all()
    for name in ("loss", "status", "steps"):
        np.testing.assert_array_equal(got[name].values, reference[name].values)


def test_a_chunk_file_of_another_config_is_recomputed(manager, tmp_path, cfg, capsys, counted):
    out = tmp_path / "r.nc"
    config, data = resolve_config(build_config(str(cfg)), manager)
    store = PartStore(out)
    store.open(config.to_toml())
    chunk = make_chunks(config.sweep)[0]
    store.fingerprint = "0123456789abcdef"          # as if saved under another config
    store.save(Engine(config, data, manager).run_chunk(chunk))
    counted.clear()
    assert run(cfg, out) == 0
    assert "(it was computed with another config)" in one_line(capsys.readouterr().err,
                                                              "warning")
    assert len(counted) == N_CHUNKS


def test_a_fresh_probe_of_another_process_is_never_cleaned(tmp_path):
    out = tmp_path / "x.nc"
    fresh, stale = tmp_path / ".x.nc.abcdefgh.probe", tmp_path / ".x.nc.stale_00.probe"
    fresh.write_text("")
    stale.write_text("")
    old = time.time() - 2 * files.STALE_PROBE_S
    os.utime(stale, (old, old))
    with OutputLock(out):
        assert fresh.exists() and not stale.exists()


def test_output_name_too_long_is_one_line(tmp_path, cfg, capsys, counted):
    for length in (300, 250):
        assert run(cfg, tmp_path / ("a" * length + ".nc")) == 2
        line = one_line(capsys.readouterr().err)
        assert "too long" in line.lower() and not counted
    assert leftovers(tmp_path) == []


@pytest.fixture
def no_point_resolved(monkeypatch):
    """The names of what was built: axis points resolved, record schedules, a boundary
    search's interior points."""
    import phasekit.analysis.boundary as boundary
    import phasekit.config.resolve as resolve
    import phasekit.engine.engine as engine

    seen = []
    for module, name in ((resolve, "AxisPoint"), (engine, "record_schedule"),
                         (boundary, "_interior")):
        original = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _o=original, _n=name, **k:
                            seen.append(_n) or _o(*a, **k))
    return seen


@pytest.mark.parametrize("command, match", [
    (["run", "--set", "sweep.seeds=2", "--set", "sweep.eta_lambda0=[1.0,2.0,3.0]",
      "--set", "sweep.max_steps=100000000", "--set", "sweep.record_per_decade=1000000000"],
     "2 seed(s) x 3 learning rate(s) x up to 100000001 recorded steps"),
    (["run", "--dry-run", "--set", "sweep.seeds=1", "--set", "sweep.max_steps=10000000000",
      "--set", "sweep.record_per_decade=100000000"], "x up to 769897203 recorded steps"),
    (["boundary", "--set", "sweep.seeds=1", "--points", "1000000000"],
     "1 seed(s) x 1000000046 rates (the grid and --points)"),
    (["run", "--axis", "model.width=[" + ",".join(map(str, range(2, 2002, 2))) + "]",
      "--axis", "model.eigen_high=[" + ",".join(map(str, range(2, 1002))) + "]"],
     "(1000000 axis point(s) x 8 seed(s) x 46 learning rate(s) x up to "),
])
def test_sizes_are_refused_from_the_parameters_before_any_allocation(
        tmp_path, capsys, command, match, no_point_resolved, counted, monkeypatch):
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "4")
    out = tmp_path / "never.nc"
    assert main([*command, "-q", "-o", str(out)]) == 2
    line = one_line(capsys.readouterr().err)
    assert "trajectories would take" in line and match in line
    assert "set by PHASEKIT_MEMORY_LIMIT_GIB" in line
    assert not {"record_schedule", "_interior"} & set(no_point_resolved)
    if command[0] == "run":                             # not one of the axis points either
        assert "AxisPoint" not in no_point_resolved
    assert not counted and list(tmp_path.iterdir()) == []


def test_a_huge_max_steps_dry_run_allocates_per_run_not_per_step(capsys):
    assert main(["run", "--dry-run", "--set", "sweep.seeds=1",
                 "--set", "sweep.eta_lambda0=[0.5,1.5]",
                 "--set", "sweep.max_steps=1000000000000000"]) == 0
    out = capsys.readouterr().out
    assert "if every run went to max_steps = 1000000000000000" in out


def test_resume_refusal_names_every_changed_key_with_both_values(tmp_path, cfg, capsys):
    out = tmp_path / "r.nc"
    cfg.write_text(CONFIG.replace("eta_lambda0 = [0.5, 2.5, 3.5, 6.0]",
                                  "eta_lambda0 = [\n  0.5,\n  2.5,\n  3.5,\n  16.0,\n]"))
    assert run(cfg, out) == 0
    assert run(cfg, out, "--set", "sweep.seeds=[0,1,2,3]", "--set", "sweep.max_steps=100",
               "--set", "sweep.eta_lambda0=[0.5,2.5,3.5,6.0]") == 2
    line = one_line(capsys.readouterr().err)
    for said in ("sweep.seeds: stored [0, 1, 2], now [0, 1, 2, 3]",
                 "sweep.max_steps: stored 2000, now 100",
                 "sweep.eta_lambda0: stored [0.5, 2.5, 3.5, 16.0], now [0.5, 2.5, 3.5, 6.0]"):
        assert said in line
    store = PartStore(tmp_path / "q.nc")
    store.open(CONFIG)
    with pytest.raises(ResumeError, match=r"\(sweep.seeds: stored \[0, 1, 2\], now "
                                                r"\[0, 1\]; sweep.tol: stored \(absent\)"):
        store.open(CONFIG.replace("seeds = [0, 1, 2]", "seeds = [0, 1]\ntol = 1e-9"))


def test_scheduler_addresses_empty_wrong_or_answering_garbage(tmp_path, cfg, capsys, counted):
    pytest.importorskip("dask.distributed")
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def garbage():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.sendall(b"\xff" * 64 + b"garbage" * 100)
            conn.close()

    threading.Thread(target=garbage, daemon=True).start()
    out = tmp_path / "never.nc"
    try:
        for address, said in (
                ("", "--scheduler needs an address such as tcp://host:8786 or "
                     "tls://host:8786, got an empty one"),
                (" ", "got an empty one"),
                ("nonsense://x", "not a Dask scheduler address (unknown address scheme"),
                (f"tcp://127.0.0.1:{listener.getsockname()[1]}",
                 "something answers there, but not as a Dask scheduler"),
                ("tls://127.0.0.1:1", "a tls:// scheduler needs Dask's TLS settings")):
            assert run(cfg, out, "--scheduler", address) == 2
            line = one_line(capsys.readouterr().err)
            assert said in line and "allocate" not in line
    finally:
        listener.close()
    assert not counted and leftovers(tmp_path) == [] and not out.exists()


@pytest.mark.parametrize("x, why", [("1e308", "the NTK is not finite at initialisation"),
                                    ("0.0", "the NTK vanishes at initialisation")])
def test_an_undefined_lambda0_says_why(tmp_path, cfg, capsys, x, why):
    assert run(cfg, tmp_path / "n.nc", "--set", f"dataset.x=[{x}]") == 2
    line = one_line(capsys.readouterr().err)
    assert why in line and (x == "0.0") == ("x = 0" in line)
