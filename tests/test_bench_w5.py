"""``phasekit bench --workloads W5``: one run of the two-layer ReLU net with the default
observables prints its row (run-steps per second, FLOPs of an average step, the share of
the matmul peak).  Nothing here asserts a speed."""

from __future__ import annotations

import pytest

from phasekit.cli.main import main


@pytest.mark.slow
def test_bench_w5_prints_its_row(capsys):
    assert main(["bench", "--quick", "--workloads", "W5", "--dtype", "float64",
                 "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "machine:" in out
    row = next(line for line in out.splitlines() if line.startswith("W5 "))
    if "skipped" in row:                                      # no Fashion-MNIST here
        pytest.skip(row)
    fields = row.split()
    assert fields[:3] == ["W5", "float64", "1"]
    rate, wall, recorded, plain, rec, avg, gflops, peak = (
        float(f.replace(",", "")) for f in fields[3:11])
    assert rate > 0 and wall > 0 and gflops > 0 and peak > 0
    assert recorded == 101                       # --quick: 100 steps, every one recorded
    assert 0 < plain < rec                       # a recorded step adds the NTK, test pass
    assert avg == pytest.approx(rec, rel=1e-3)   # (all 101 recorded)
    assert abs(rate * wall - 101) <= 0.01 * 101  # run-steps/s = forward passes / wall
    assert fields[11].endswith("%")
    # the W1-W3 table is not printed when none of them is asked for
    assert "baseline run-steps/s" not in out
