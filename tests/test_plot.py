"""Figures from stored sweeps (phasekit.plot) and `phasekit plot`."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import xarray as xr

from phasekit import api
from phasekit.cli_analysis import add_subcommands, cmd_analyze, cmd_boundary, cmd_plot
from phasekit.cli_analysis import main as analysis_main
from phasekit.options import ConfigError
from phasekit.plot import choose_c, parse_panels, plot_sweep
from phasekit.storage import SweepFileError, write_sweep

from .helpers import sweep, toy_quadratic
from .test_phases import synthetic_sweep


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    ds = sweep(toy_quadratic(width=60, seeds=[0, 1], eta_lambda0=[0.5, 1.5, 2.5, 3.3, 4.5],
                             max_steps=3000))
    path = tmp_path_factory.mktemp("plot") / "sweep.nc"
    write_sweep(ds, path)
    return path


@pytest.mark.parametrize("suffix, magic", [(".png", b"\x89PNG"), (".pdf", b"%PDF"),
                                           (".svg", b"<?xml")])
def test_each_format_is_written(stored, tmp_path, suffix, magic):
    out = tmp_path / f"fig{suffix}"
    fig = api.plot(stored, out)
    assert out.read_bytes().startswith(magic)
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert [t[:3] for t in titles if t] == ["(a)", "(b)", "(c)", "(d)", "(e)"]


@pytest.mark.parametrize("suffix", [".png", ".svg", ".pdf"])
def test_output_is_deterministic(stored, tmp_path, suffix):
    ds = api.load(stored)
    one, two = tmp_path / f"1{suffix}", tmp_path / f"2{suffix}"
    plot_sweep(ds, path=one)
    plot_sweep(api.load(stored), path=two)
    assert one.read_bytes() == two.read_bytes()


def test_axis_labels_symbols_and_vertical_lines(stored):
    fig = plot_sweep(api.load(stored), panels="a,d")
    loss_ax, sharp_ax = [ax for ax in fig.axes if ax.get_title(loc="left")]
    assert loss_ax.get_yscale() == "log" and loss_ax.get_xscale() == "symlog"
    assert sharp_ax.get_xlabel() == r"$c = \eta\,\lambda_0$"
    legend_text = " ".join(t.get_text() for ax in fig.axes if ax.get_legend()
                           for t in ax.get_legend().get_texts())
    assert "$c = 2$" in legend_text and "$c = 4$" in legend_text
    assert "eq. 60 bound (catapult)" in legend_text
    assert "eq. 68 bound (divergence)" in legend_text and "off the axis" in legend_text
    assert "diverged" in legend_text
    xs = {round(float(line.get_xdata()[0]), 6) for line in sharp_ax.lines
          if line.get_linestyle() not in ("-", "None") and len(line.get_xdata()) == 2
          and line.get_xdata()[0] == line.get_xdata()[1]}
    assert {2.0, 4.0} <= xs


def test_all_seven_panels_with_trivial_undetermined_and_layers(tmp_path):
    kinds = [["converged_lazy", "converged_catapult", "converged_catapult", "trivial",
              "max_steps", "diverged"],
             ["converged_lazy", "converged_catapult", "diverged", "trivial", "trivial",
              "diverged"]]
    ds = synthetic_sweep(kinds, [0.5, 2.5, 3.0, 3.5, 4.0, 5.0], layers=2, gap=True)
    assert parse_panels(None, ds) == list("abcdefg")
    fig = plot_sweep(ds, path=tmp_path / "all.png")
    assert (tmp_path / "all.png").stat().st_size > 10_000
    legend_text = " ".join(t.get_text() for ax in fig.axes if ax.get_legend()
                           for t in ax.get_legend().get_texts())
    for word in ("trivial", "max_steps", "diverged", "layer 1", "layer 2", "range over seeds",
                 "eq. 0 bound"):
        assert word in legend_text, word


def test_choose_c():
    ds = synthetic_sweep([["converged_lazy", "converged_lazy", "converged_catapult",
                           "converged_catapult", "diverged", "diverged"]],
                         [0.5, 1.0, 2.5, 3.0, 4.0, 5.0])
    assert choose_c(ds, [2.4, 2.9, 100, 2.6]) == [2.5, 3.0, 5.0]
    picks = choose_c(ds)
    assert 4.0 in picks and 5.0 not in picks         # the first divergent c, not beyond
    assert any(c < 2 for c in picks) and any(2 < c < 4 for c in picks)


def test_not_a_sweep_is_a_clear_error(tmp_path):
    junk = tmp_path / "other.nc"
    xr.Dataset({"temperature": ("x", np.arange(3.0))}).to_netcdf(junk)
    with pytest.raises(SweepFileError, match="not a phasekit sweep"):
        api.plot(junk)
    with pytest.raises(SweepFileError, match="not a phasekit sweep"):
        plot_sweep(xr.Dataset({"temperature": ("x", np.arange(3.0))}))


def test_missing_variable_names_the_panel(stored):
    ds = api.load(stored).drop_vars(["sharpness"])
    plot_sweep(ds, panels="a,b,d")                       # fine without (c)
    with pytest.raises(SweepFileError, match=r"panel \(c\).*'sharpness'"):
        plot_sweep(ds, panels="c")
    with pytest.raises(SweepFileError, match=r"panel \(f\).*sparsity"):
        plot_sweep(api.load(stored), panels="f")
    with pytest.raises(SweepFileError, match=r"panel \(g\)"):
        plot_sweep(api.load(stored), panels=["g"])


def test_bad_panels_and_suffix(stored, tmp_path):
    with pytest.raises(ConfigError, match="unknown panel"):
        plot_sweep(api.load(stored), panels="a,z")
    with pytest.raises(ConfigError, match=".png"):
        plot_sweep(api.load(stored), path=tmp_path / "fig.jpg")
    assert parse_panels("loss, sharpness,d") == ["a", "c", "d"]


def test_add_subcommands_on_a_fresh_parser():
    parser = argparse.ArgumentParser(prog="phasekit")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["plot", "s.nc", "-o", "f.svg", "--panels", "a,d", "--c", "2.5"])
    assert args.handler is cmd_plot and args.output == "f.svg" and args.c_values == "2.5"
    args = parser.parse_args(["analyze", "s.nc", "--in-place"])
    assert args.handler is cmd_analyze and args.in_place
    with pytest.raises(SystemExit):
        parser.parse_args(["analyze", "s.nc", "--in-place", "-o", "x.nc"])
    args = parser.parse_args(["boundary", "--preset", "fig1", "--set", "model.width=100",
                              "--tol", "0.05"])
    assert args.handler is cmd_boundary and args.tol == 0.05
    assert args.overrides == ["model.width=100"] and args.output == "boundary.nc"


def test_plot_command(stored, tmp_path, capsys):
    out = tmp_path / "fig.svg"
    assert analysis_main(["plot", str(stored), "-o", str(out), "--panels", "a,b,e",
                          "--c", "1.5,3.3"]) == 0
    assert out.exists() and "wrote" in capsys.readouterr().out
    assert analysis_main(["plot", str(stored), "--panels", "f", "-o", str(out)]) == 2
    assert "panel (f)" in capsys.readouterr().err
    assert analysis_main(["plot", str(stored), "--c", "two", "-o", str(out)]) == 2
    assert analysis_main(["plot", str(stored), "-o", str(tmp_path / "x.gif")]) == 2
