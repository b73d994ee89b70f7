"""Crash-safe resume and Dask-distributed sweeps."""

from __future__ import annotations

import collections
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
from phasekit.cli.main import main
from phasekit.config.resolve import build_config, merge, resolve_config
from phasekit.engine.chunks import make_chunks
from phasekit.engine.engine import Engine
from phasekit.errors import ResumeError
from phasekit.io.parts import PartStore, chunk_key, save_result
from phasekit.runner.execute import execute

from .helpers import killed_run, stored, toy_quadratic, unfinished_batches

EXE = os.path.join(os.path.dirname(sys.executable), "phasekit")


def small(**sweep_kw):
    raw = toy_quadratic(40, 1.0, 2.0)
    return merge(raw, {"sweep": {"eta_lambda0": [0.5, 2.5, 3.5, 6.0], "seeds": [0, 1, 2],
                                 "chunk_size": 2, "max_steps": 2000, **sweep_kw}})


def test_resume_computes_only_unfinished_batches(manager, tmp_path):
    config, data = resolve_config(small(), manager)
    reference = execute(config, data, manager, derive=add_critical)   # uninterrupted, in memory
    out = tmp_path / "r.nc"
    # The three seeds share a batch per pair of rates (the toy quadratic model stacks
    # seeds).  A kill after the first batch and one chunk of the second: the resumed run
    # trains the second batch whole, its stored chunk included, as the uninterrupted run
    # did, and keeps the stored result.
    chunks = make_chunks(config.sweep)
    saved = {chunk_key(c) for c in chunks if c.c_index[0] == 0} | {chunk_key(chunks[1])}
    store = killed_run(config, data, manager, out, lambda c: chunk_key(c) in saved)
    assert len(store.chunk_files()) == 4
    calls = []
    original = Engine.run_batch

    def counting(self, batch, progress=None, **kw):
        calls.append([chunk_key(c) for c in batch])
        return original(self, batch, progress, **kw)

    Engine.run_batch = counting
    try:
        resumed = execute(config, data, manager, out, derive=add_critical)
    finally:
        Engine.run_batch = original
    assert calls == [[chunk_key(c) for c in chunks if c.c_index[0] == 2]]
    assert calls == [unfinished_batches(config, data, manager, lambda c: chunk_key(c) in saved)]
    xr.testing.assert_identical(resumed, reference)
    xr.testing.assert_identical(stored(out), reference)
    assert not store.folder.exists()                              # cleaned up


def test_different_config_is_refused(manager, tmp_path):
    config, data = resolve_config(small(), manager)
    out = tmp_path / "r.nc"
    store = PartStore(out)
    store.open(config.to_toml())
    save_result(Engine(config, data, manager).run_chunk(make_chunks(config.sweep)[0]),
                store.folder / "chunk-s0000-c00000.npz")
    other, data2 = resolve_config(small(max_steps=100), manager)
    with pytest.raises(ResumeError, match=r"different config \(sweep.max_steps: stored "
                                          r"2000, now 100\)"):
        execute(other, data2, manager, out, derive=add_critical)
    assert (store.folder / "chunk-s0000-c00000.npz").exists()    # nothing was lost
    execute(other, data2, manager, out, overwrite=True, derive=add_critical)  # explicit discard
    assert out.exists()


def test_torn_chunk_file_is_recomputed(manager, tmp_path):
    config, data = resolve_config(small(), manager)
    out = tmp_path / "r.nc"
    store = PartStore(out)
    store.open(config.to_toml())
    (store.folder / "chunk-s0000-c00000.npz").write_bytes(b"PK\x03\x04 torn")
    xr.testing.assert_identical(execute(config, data, manager, out, derive=add_critical),
                                execute(config, data, manager, derive=add_critical))


def _count_chunks(folder: Path) -> int:
    return len(list(folder.glob("chunk-*.npz"))) if folder.exists() else 0


@pytest.mark.slow
def test_sigkill_mid_sweep_then_resume(tmp_path):
    """Kill a real ``phasekit run`` with SIGKILL mid-sweep; rerunning finishes it."""
    args = ["run", "--preset", "fig1", "--set", "model.width=200", "--set",
            "sweep.eta_lambda0={start=0.5,stop=3.5,num=4}", "--set", "sweep.seeds=4",
            "--set", "sweep.chunk_size=1", "--set", "sweep.tol=0.0",
            "--set", "sweep.max_steps=1500"]
    out = tmp_path / "killed.nc"
    parts = PartStore(out).folder
    proc = subprocess.Popen([EXE, *args, "-o", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while _count_chunks(parts) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the sweep ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = _count_chunks(parts)
    assert 2 <= done_before < 16 and not out.exists()
    # the four seeds of a rate share a batch; a kill between two of its saves leaves it
    # unfinished, and the resumed run trains it whole again
    per_rate = collections.Counter(p.stem[-6:] for p in parts.glob("chunk-*.npz"))
    finished = sum(n for n in per_rate.values() if n == 4)

    resumed = subprocess.run([EXE, *args, "-o", str(out)], capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    again = (f"; {done_before - finished} stored with an unfinished batch are trained again "
             f"with it" if finished < done_before else "\n")
    assert f"resuming: {finished} of 16 grid points already done{again}" in resumed.stderr
    whole = tmp_path / "whole.nc"
    subprocess.run([EXE, *args, "-q", "-o", str(whole)], check=True, timeout=300)
    xr.testing.assert_identical(stored(out), stored(whole))
    assert not parts.exists()


def test_sigterm_mid_sweep_is_one_line_keeps_the_chunks_and_releases_the_lock(tmp_path):
    """SIGTERM (a scheduler ending a job, ``kill``) ends like Ctrl-C: one line saying what
    is kept, exit status 143, the lock released; the same command then resumes."""
    args = ["run", "--preset", "fig1", "--set", "model.width=200", "--set",
            "sweep.eta_lambda0={start=0.5,stop=3.5,num=4}", "--set", "sweep.seeds=4",
            "--set", "sweep.chunk_size=1", "--set", "sweep.tol=0.0",
            "--set", "sweep.max_steps=1500", "-q"]
    out = tmp_path / "term.nc"
    parts = PartStore(out).folder
    proc = subprocess.Popen([EXE, *args, "-o", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while _count_chunks(parts) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the sweep ended before it could be terminated"
    proc.terminate()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    lines = [line for line in err.splitlines() if line.strip()]
    kept = _count_chunks(parts)
    assert lines == [f"phasekit: interrupted by SIGTERM; {kept} of 16 chunks are kept in "
                     f"{parts}{os.sep}; rerun the same command to resume"]
    assert not out.exists() and not Path(f"{out}.lock").exists() and kept >= 2
    assert main([*args, "-o", str(out)]) == 0
    assert not parts.exists() and out.exists()


def test_rerun_of_a_finished_sweep_does_nothing(tmp_path, capsys):
    out = tmp_path / "done.nc"
    args = ["run", "--preset", "fig6", "--set", "sweep.eta_lambda0=[1.0, 3.0]", "-o", str(out)]
    assert main([*args, "-q"]) == 0
    stamp = out.stat().st_mtime_ns
    assert main(args) == 0
    assert "already holds this sweep" in capsys.readouterr().out
    assert out.stat().st_mtime_ns == stamp


def test_dry_run(capsys, tmp_path):
    out = tmp_path / "never.nc"
    assert main(["run", "--preset", "fig1", "--set", "sweep.seeds=3", "--set",
                 "sweep.chunk_size=10", "--dry-run", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "grid: 3 seed(s) x 23 learning rates = 69 runs" in text
    assert "9 chunk(s) of up to 10 runs" in text
    assert "memory per chunk" in text and "ms per step" in text and "estimated time" in text
    assert not out.exists()


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as c:
        yield c


@pytest.mark.slow
@pytest.mark.kernels
@pytest.mark.parametrize("threads", [1, 2])
def test_dask_scheduler_matches_single_process(manager, cluster, tmp_path, threads):
    """Dask's workers run the config's batches with sweep.threads: the same kernels on the
    same shapes as one process, so the same numbers to the bit, whatever the BLAS."""
    config, data = resolve_config(small(threads=threads), manager)
    single = execute(config, data, manager, derive=add_critical)
    out = tmp_path / "dask.nc"
    distributed = execute(config, data, manager, out, scheduler=cluster.scheduler_address,
                          derive=add_critical)
    xr.testing.assert_identical(distributed, single)
    xr.testing.assert_identical(stored(out), single)


@pytest.mark.slow
def test_cli_workers_matches_single_process(manager, tmp_path):
    pytest.importorskip("dask.distributed")
    args = ["run", "--preset", "fig1", "--set", "model.width=60", "--set",
            "sweep.eta_lambda0=[1.0, 2.5, 3.5]", "--set", "sweep.seeds=3", "-q"]
    assert main([*args, "--workers", "2", "-o", str(tmp_path / "w.nc")]) == 0
    config, data = resolve_config(build_config(None, preset="fig1", overrides=[
        a for a in args[3:] if a not in ("--set", "-q")]), manager)
    xr.testing.assert_identical(stored(tmp_path / "w.nc"),
                                execute(config, data, manager, derive=add_critical))
    assert np.all(xr.open_dataset(tmp_path / "w.nc").steps.values > 0)


@pytest.mark.slow
def test_bench_quick_prints_numbers(capsys):
    assert main(["bench", "--quick", "--workloads", "W1", "--dtype", "float64",
                 "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "machine:" in out
    row = next(line for line in out.splitlines() if line.startswith("W1"))
    fields = row.split()
    assert fields[1] == "float64" and fields[2] == "1" and fields[5].endswith("x")
    assert float(fields[3].replace(",", "")) > 0 and float(fields[4].replace(",", "")) > 0


@pytest.mark.slow
def test_worker_loss_mid_sweep(manager, cluster, tmp_path):
    """Kill a Dask worker while chunks are running: the sweep still completes and
    equals a single-process run (the lost chunks are recomputed)."""
    import threading

    from dask.distributed import Client

    config, data = resolve_config(small(chunk_size=1, tol=0.0, max_steps=3000), manager)
    out = tmp_path / "lost.nc"
    parts = PartStore(out).folder
    result = {}
    runner = threading.Thread(target=lambda: result.update(ds=execute(
        config, data, manager, out, scheduler=cluster.scheduler_address, derive=add_critical)))
    runner.start()
    deadline = time.time() + 120
    while _count_chunks(parts) < 1 and runner.is_alive() and time.time() < deadline:
        time.sleep(0.02)
    with Client(cluster.scheduler_address) as client:
        victim, pid = sorted(client.run(os.getpid).items())[0]
    os.kill(pid, signal.SIGKILL)                                  # its nanny starts a new one
    runner.join(timeout=300)
    assert not runner.is_alive() and "ds" in result
    with Client(cluster.scheduler_address) as client:
        assert victim not in client.scheduler_info()["workers"]     # it really was lost
    xr.testing.assert_identical(result["ds"], execute(config, data, manager, derive=add_critical))


def test_bench_times_a_whole_preset(capsys):
    assert main(["bench", "--quick", "--workloads", "P-default", "--dtype", "float64"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("default "))
    fields = row.split()
    assert fields[1] == "float64"
    wall, run_steps, rate = (float(f.replace(",", "")) for f in fields[2:5])
    assert wall > 0 and run_steps > 0 and abs(rate - run_steps / wall) <= 0.01 * rate + 1


def test_tls_scheduler_with_dasks_own_settings(tmp_path):
    """A ``tls://`` scheduler is used with Dask's TLS settings (here from the
    environment), and the result equals a run in one process."""
    pytest.importorskip("dask.distributed")
    import shutil

    from distributed import LocalCluster
    from distributed.security import Security

    if shutil.which("openssl") is None:
        pytest.skip("needs openssl to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-subj", "/CN=localhost", "-days", "1"],
                   check=True, capture_output=True)
    c, k = str(cert), str(key)
    security = Security(tls_ca_file=c, tls_client_cert=c, tls_client_key=k,
                        tls_scheduler_cert=c, tls_scheduler_key=k, tls_worker_cert=c,
                        tls_worker_key=k, require_encryption=True)
    args = ["run", "-q", "--preset", "fig6", "--set", "sweep.eta_lambda0=[1.0, 3.0]",
            "--set", "sweep.seeds=2"]
    env = {**os.environ, "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": c,
           "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": c,
           "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": k}
    with LocalCluster(n_workers=1, threads_per_worker=1, protocol="tls", security=security,
                      dashboard_address="127.0.0.1:0", host="127.0.0.1") as tls_cluster:
        address = tls_cluster.scheduler_address
        assert address.startswith("tls://")
        without = subprocess.run([EXE, *args, "--scheduler", address, "-o",
                                  str(tmp_path / "no.nc")], capture_output=True, text=True,
                                 timeout=120)
        assert without.returncode == 2
        assert "needs Dask's TLS settings, which are not set" in without.stderr
        done = subprocess.run([EXE, *args, "--scheduler", address, "-o",
                               str(tmp_path / "tls.nc")], env=env, capture_output=True,
                              text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert main([*args, "-o", str(tmp_path / "here.nc")]) == 0
    xr.testing.assert_identical(stored(tmp_path / "tls.nc"), stored(tmp_path / "here.nc"))
