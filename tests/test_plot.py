"""Figures from stored sweeps (phasekit.plot) and `phasekit plot`."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import xarray as xr
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cbook import is_math_text
from matplotlib.collections import LineCollection, QuadMesh
from matplotlib.colors import to_hex, to_rgb

from phasekit import api
from phasekit.analysis.averaged import add_seed_averaged, mean_phase, seed_averaged_rates
from phasekit.analysis.phases import VOTING, classify, critical_rates, phase_counts, tied
from phasekit.analysis.report import span, summary_text
from phasekit.cli.analysis import add_subcommands, cmd_analyze, cmd_boundary, cmd_plot
from phasekit.cli.analysis import main as analysis_main
from phasekit.errors import ConfigError, SweepFileError
from phasekit.io.netcdf import write_sweep
from phasekit.plot.diagram import POINTS_DISAGREE, SEEDS_DISAGREE
from phasekit.plot.figure import plot_sweep
from phasekit.plot.panels import choose_c, parse_panels
from phasekit.plot.select import geometric
from phasekit.plot.style import BOUND_COLORS, TIE_LABEL, rate_colors

from .helpers import sweep, toy_quadratic
from .test_critical import make_sweep
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


@pytest.mark.slow
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


# -- sweeps with axes: the 2-D phase diagram ----------------------------------------

def axis_sweep(depths=(1, 2, 4), widths=(64, 128, 256, 512), seeds=3, trivial=True):
    """A synthetic sweep over hidden_layers x width whose critical learning rates depend
    on r = depth / width: c_loss = 2 + 60 r (+ 0.1 per seed), c_sharp = 2 - 10 r
    (+ 0.05 per seed), divergence from c_max = 4 + 60 r (+ 0.15 per seed), trivial runs
    just below it at depth 4; bounds eq. 60, eq. 95 (catapult) and eq. 68 (divergence,
    depth 1 only, NaN elsewhere)."""
    cs = np.round(np.arange(0.25, 8.01, 0.25), 2)
    d = np.asarray(depths, float)[:, None, None, None]
    w = np.asarray(widths, float)[None, :, None, None]
    s = np.arange(seeds)[None, None, :, None]
    c = cs[None, None, None, :]
    r = d / w
    T = np.arange(40)[None, None, None, None, :]
    rises, fails = c >= 2 + 60 * r + 0.1 * s, c >= 4 + 60 * r + 0.15 * s
    triv = trivial & (d == 4) & (c >= 4 + 60 * r + 0.15 * s - 0.6) & ~fails
    status = np.where(fails, "diverged", np.where(triv, "trivial", "converged")).astype(object)
    loss = np.where(rises[..., None], np.where(T <= 10, 1 + 0.5 * T, 6 * 0.7 ** (T - 10)),
                    0.8 ** T) * np.ones(status.shape + (1,))
    loss = np.where(fails[..., None], np.where(T == 20, np.inf, 1.5 ** T), loss)
    loss = np.where((fails[..., None] & (T > 20)) | (~fails[..., None] & (T > 30)), np.nan, loss)
    drop = (c >= 2 - 10 * r + 0.05 * s)[..., None]
    sharp = np.where(np.isnan(loss), np.nan, c[..., None] * (1 - 0.2 * drop * np.minimum(T, 5)
                                                             / 5))
    ones = np.ones(status.shape[:-1])
    bounds = {"60": ((2 + 40 * r + 0.01 * s)[..., 0] * ones, "catapult"),
              "95": ((2.5 + 20 * r)[..., 0] * ones, "catapult"),
              "68": (np.where(d[..., 0] == 1, 4 + 50 * r[..., 0], np.nan) * ones, "divergence")}
    ds = make_sweep(status, loss, sharp, cs=cs, bounds=bounds,
                    axes={"hidden_layers": list(depths), "width": list(widths)})
    grid = ("hidden_layers", "width", "seed", "eta_lambda0")
    wn = np.where(np.isnan(loss), np.nan, 100 * (1 + 0.01 * T * (c >= 2)[..., None]))
    ds["weight_norm"] = (grid + ("step",), wn)
    ds["final_weight_norm"] = (grid, np.take_along_axis(
        wn, np.clip(ds["steps"].values, 0, 39)[..., None], -1)[..., 0])
    return ds


def panels_of(fig):
    """The diagram panels (axes holding cells) and the legends (in an axes of their own,
    or the figure's legend below the panels)."""
    panels = [ax for ax in fig.axes if any(isinstance(c, QuadMesh) for c in ax.collections)]
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    return panels, legends + list(fig.legends)


def legend_texts(fig) -> list[str]:
    return [t.get_text() for legend in panels_of(fig)[1] for t in legend.get_texts()]


def errorbar_line(ax, color, marker, ls="-"):
    """The data line of an errorbar series drawn with ``color``, ``marker`` and ``ls``."""
    hits = [ln for ln in ax.lines if ln.get_marker() == marker and ln.get_color() == color
            and ln.get_linestyle() == ls]
    assert len(hits) == 1, [(ln.get_marker(), ln.get_color(), ln.get_linestyle())
                            for ln in ax.lines]
    return hits[0]


def test_geometric_grids():
    assert geometric([64, 128, 256, 512]) and geometric([0.001, 0.01, 0.1])
    assert geometric([256, 64, 128])                         # order does not matter
    assert not geometric([1, 2, 3]) and not geometric([100, 101, 102])
    assert not geometric([64, 128]) and not geometric([0, 1, 2, 4])
    assert not geometric([1, 2, 4, 9])


def test_one_geometric_axis_gives_one_panel_on_a_log_x(tmp_path):
    ds = axis_sweep(depths=(2,)).squeeze("hidden_layers", drop=True)
    ds.attrs["axes"] = "width"
    fig = plot_sweep(ds, path=tmp_path / "w.png")
    assert (tmp_path / "w.png").read_bytes().startswith(b"\x89PNG")
    (ax,), (legend,) = panels_of(fig)
    assert ax.get_xscale() == "log" and ax.get_yscale() == "linear"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["64", "128", "256", "512"]
    assert ax.get_xlabel() == "width (model.width)"
    # the cell at (width, c) holds the majority phase of the seeds
    mesh = next(c for c in ax.collections if isinstance(c, QuadMesh))
    cells = np.ma.getdata(mesh.get_array()).reshape(ds.sizes["eta_lambda0"], 4)
    phase = classify(ds)
    for w, c in [(0, 0), (0, 15), (3, 14), (2, 31)]:
        runs_here = list(phase.isel(width=w, eta_lambda0=c).values)
        want = max(set(runs_here), key=runs_here.count)
        assert VOTING[int(cells[c, w])] == want, (w, c, runs_here)
    # c_max: median over seeds of the grid value, one point per width
    c_max = errorbar_line(ax, "#000000", "s")
    np.testing.assert_array_equal(c_max.get_xdata(), [64, 128, 256, 512])
    want = np.median(critical_rates(ds)["c_max"].transpose("width", "seed").values, axis=1)
    np.testing.assert_array_equal(c_max.get_ydata(), want)
    text = " ".join(legend_texts(fig))
    for word in ("lazy", "catapult", "divergent", "seeds disagree", "c_{\\rm loss}",
                 "c_{\\rm sharp}", "c_{\\max}", "eq. 60 bound (catapult)",
                 "eq. 95 bound (catapult)"):
        assert word in text, word
    assert "eq. 68" not in text                          # not applicable at depth 2
    assert "trivial" not in text


def test_an_arithmetic_axis_is_linear():
    ds = axis_sweep(depths=(1,), widths=(100, 200, 300)).squeeze("hidden_layers", drop=True)
    ds.attrs["axes"] = "width"
    (ax,), _ = panels_of(plot_sweep(ds))
    assert ax.get_xscale() == "linear"


def test_two_axes_give_a_panel_per_value_of_the_other():
    ds = axis_sweep()
    fig = plot_sweep(ds)                                  # x: width, the longest axis
    panels, legends = panels_of(fig)
    assert len(panels) == 3 and len(legends) == 1 and len(fig.axes) == 3   # no empty slot
    assert [ax.get_title(loc="left") for ax in panels] == [
        "hidden_layers = 1", "hidden_layers = 2", "hidden_layers = 4"]
    assert all(ax.get_xscale() == "log" for ax in panels)
    c_loss = errorbar_line(panels[2], "#08306b", "o")
    want = np.median(critical_rates(ds)["c_loss"].sel(hidden_layers=4).values, axis=-1)
    np.testing.assert_array_equal(c_loss.get_ydata(), want)
    text = legend_texts(fig)
    assert "eq. 68 bound (divergence)" in text and "trivial" in text
    assert any("c_{\\rm trivial}" in t for t in text)
    # x = the other axis: one panel per width, four panels in two rows
    panels, _ = panels_of(plot_sweep(ds, x="hidden_layers"))
    assert [ax.get_title(loc="left") for ax in panels] == [
        "width = 64", "width = 128", "width = 256", "width = 512"]
    assert panels[0].get_xlabel() == "hidden_layers (model.hidden_layers)"


def test_five_panels_put_the_legend_in_the_free_slot():
    ds = axis_sweep(depths=(1, 2, 3, 4, 5), widths=(64, 256))
    fig = plot_sweep(ds, x="width")
    panels, (legend,) = panels_of(fig)
    assert len(panels) == 5 and len(fig.axes) == 6
    fig.canvas.draw()
    box = legend.get_window_extent()
    assert fig.bbox.contains(box.x0, box.y0) and fig.bbox.contains(box.x1, box.y1)
    slot = legend.axes.get_position()                    # the sixth slot: row 2, column 3
    assert slot.x0 > max(ax.get_position().x0 for ax in panels[3:])
    assert abs(slot.y0 - panels[3].get_position().y0) < 0.05


def test_a_ratio_of_axes_puts_every_point_on_one_panel(tmp_path):
    ds = axis_sweep()
    fig = plot_sweep(ds, x="hidden_layers/width", path=tmp_path / "ratio.png")
    (ax,), _ = panels_of(fig)
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "hidden_layers / width"
    mesh = next(c for c in ax.collections if isinstance(c, QuadMesh))
    ratios = np.unique([d / w for d in (1, 2, 4) for w in (64, 128, 256, 512)])
    assert np.ma.getdata(mesh.get_array()).size == ratios.size * ds.sizes["eta_lambda0"]
    # one line style per depth: c_loss of depth 2 at x = 2 / width; where other depths
    # share the x (2/512 = 1/256, 2/64 = 4/128) the points spread across that x's cell,
    # where three share it (2/256 = 1/128 = 4/512) depth 2 is the middle one, at x
    line = errorbar_line(ax, "#08306b", "o", ls="--")
    want = 2 / np.array([512, 256, 128, 64])
    got = np.asarray(line.get_xdata())
    np.testing.assert_allclose(got[[1, 2]], want[[1, 2]])
    assert (np.abs(got[[0, 3]] - want[[0, 3]]) > 0.05 * want[[0, 3]]).all()
    assert (np.abs(np.log(got / want)) < np.log(2) / 2).all()       # inside the x's cell
    text = legend_texts(fig)
    assert {"hidden_layers = 1", "hidden_layers = 2", "hidden_layers = 4"} <= set(text)
    # the option name works too
    (ax,), _ = panels_of(plot_sweep(ds, x="model.hidden_layers/model.width"))
    assert ax.get_xlabel() == "hidden_layers / width"


def test_an_expression_of_axes_on_x_counts_layers_as_the_literature_does():
    """``--x '(hidden_layers+2)/width'``: depth d = k + 2 layers over width, each point at
    its own d/w, and the expression as the label."""
    ds = axis_sweep(depths=(0, 2, 6), widths=(64, 256), seeds=1)
    (ax,), _ = panels_of(plot_sweep(ds, x="(hidden_layers+2)/width"))
    assert ax.get_xlabel() == "(hidden_layers + 2) / width" and ax.get_xscale() == "log"
    mesh = next(c for c in ax.collections if isinstance(c, QuadMesh))
    x = np.unique([(k + 2) / w for k in (0, 2, 6) for w in (64, 256)])
    assert np.ma.getdata(mesh.get_array()).size == x.size * ds.sizes["eta_lambda0"]


def test_select_gives_the_panels_of_one_axis_point():
    ds = axis_sweep()
    fig = plot_sweep(ds, select=["width=128", "hidden_layers=2"])
    titles = [ax.get_title(loc="left")[:3] for ax in fig.axes if ax.get_title(loc="left")]
    assert titles == ["(a)", "(b)", "(c)", "(d)", "(e)"]
    assert fig._suptitle.get_text().endswith("(hidden_layers = 2, width = 128)")
    assert "eq. 68" not in " ".join(legend_texts(fig))   # NaN at depth 2: not drawn
    one = plot_sweep(ds, select={"model.hidden_layers": 1, "width": "512"}, panels="d")
    assert "eq. 68 bound (divergence), seed mean = 4.1" in legend_texts(one)
    # an axis fixed, the other left: the diagram over it
    panels, _ = panels_of(plot_sweep(ds, select=["width=64"]))
    assert len(panels) == 1 and panels[0].get_xlabel().startswith("hidden_layers")
    # an axis with a single value counts as fixed
    fig = plot_sweep(ds.isel(width=[1]), select=["hidden_layers=4"], panels="a")
    assert fig._suptitle.get_text().endswith("(hidden_layers = 4, width = 128)")


@pytest.mark.parametrize("kwargs, message", [
    ({"x": "depth"}, "--x depth: 'depth' is not an axis of this sweep; its axes are "
                     "hidden_layers (model.hidden_layers), width (model.width)"),
    ({"x": "depth/width"}, "'depth' is not an axis"),
    ({"x": "width/width"}, "two different axes"),
    ({"x": "width/(hidden_layers - 1)"}, "not finite at some axis point"),
    ({"x": "__import__('os')"}, "only axis names, numbers, + - * / ** and parentheses"),
    ({"x": "width +"}, "not an arithmetic expression of axes"),
    ({"x": "width", "select": ["width=64"]}, "'width' is not an axis of this sweep; its axes "
                                             "are hidden_layers (model.hidden_layers) "
                                             "(width = 64 fixed)"),
    ({"select": ["width=100"]}, "--select width=100: 100 is not a value of the axis width; "
                                "its values are 64, 128, 256, 512"),
    ({"select": ["depth=2"]}, "--select depth=2: 'depth' is not an axis"),
    ({"select": ["width"]}, "--select expects AXIS=VALUE"),
    ({"select": ["width=64", "model.width=128"]}, "selected twice"),
    ({"select": ["width=sixty"]}, "sixty is not a value of the axis width"),
    ({"panels": "a,d"}, "--panels choose the panels of one axis point, but this sweep has the "
                        "axes hidden_layers (model.hidden_layers), width (model.width): fix "
                        "each with --select"),
    ({"c_values": [2.5]}, "--c choose the panels"),
])
def test_bad_axes_and_selections_are_clear_errors(kwargs, message):
    with pytest.raises(ConfigError) as err:
        plot_sweep(axis_sweep(depths=(1, 2), widths=(64, 128, 256, 512), seeds=1), **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_axis_options_on_a_sweep_without_axes_are_errors():
    ds = synthetic_sweep([["converged_lazy", "diverged"]], [0.5, 5.0])
    with pytest.raises(ConfigError, match="--x width: this sweep has no axes"):
        plot_sweep(ds, x="width")
    with pytest.raises(ConfigError, match="--select width=1: this sweep has no axes"):
        plot_sweep(ds, select=["width=1"])
    fixed = axis_sweep(depths=(1,), widths=(64, 128), seeds=1)
    with pytest.raises(ConfigError, match=r"every axis is fixed \(hidden_layers = 1, width = "
                                          r"64\)"):
        plot_sweep(fixed, select=["width=64", "hidden_layers=1"], x="width")


def test_bounds_are_coloured_by_kind_in_every_figure():
    ds = axis_sweep(depths=(1,), widths=(64, 128, 256))
    one = plot_sweep(ds, select=["width=64"], panels="d")
    ax = next(a for a in one.axes if a.get_title(loc="left").startswith("(d)"))
    vertical = {round(float(ln.get_xdata()[0]), 6): ln.get_color() for ln in ax.lines
                if len(ln.get_xdata()) == 2 and ln.get_xdata()[0] == ln.get_xdata()[1]}
    b = {name: float(ds[f"bound_{name}"].sel(width=64).mean()) for name in ("60", "95", "68")}
    assert vertical[round(b["60"], 6)] in BOUND_COLORS["catapult"]
    assert vertical[round(b["95"], 6)] in BOUND_COLORS["catapult"]
    assert vertical[round(b["60"], 6)] != vertical[round(b["95"], 6)]
    assert vertical[round(b["68"], 6)] in BOUND_COLORS["divergence"]
    (panel,), _ = panels_of(plot_sweep(ds))
    bars = {ln.get_color() for ln in panel.lines
            if ln.get_marker() == "_" and ln.get_linestyle() != "None"}   # not error caps
    assert bars == {vertical[round(b[k], 6)] for k in b}


@pytest.mark.slow
def test_file_strings_with_dollars_are_drawn_literally(tmp_path):
    """Text from a sweep file (model and dataset names, bound equations and kinds, long
    names, dimension names, axis keys) is drawn literally: a '$' in it is never parsed
    as mathtext, where an unbalanced one would make matplotlib raise."""
    ds = synthetic_sweep([["converged_lazy", "converged_catapult", "diverged"]],
                         [0.5, 2.5, 5.0], layers=2, gap=True)
    ds.attrs.update(model=r"$\badcommand{x$", dataset="cost $5 and $6")
    ds["bound_toy"].attrs.update(equation=r"$eq. \frac{1$", kind="$catapult$")
    ds["final_generalisation_gap"].attrs["long_name"] = r"$L_{test$"
    ds = ds.rename({"layer": "$layer$"})
    fig = plot_sweep(ds, path=tmp_path / "dollars.png")      # mathtext would raise here
    title = fig._suptitle
    assert title.get_text() == r"\$\badcommand{x\$ on cost \$5 and \$6: 1 seed"
    assert not is_math_text(title.get_text())
    texts = legend_texts(fig)
    assert r"\$eq. \frac{1\$ bound (\$catapult\$) = 2.5" in texts
    assert r"\$layer\$ 1" in texts
    axis = axis_sweep(depths=(1,), widths=(64, 128, 256), seeds=1)
    axis.attrs["model"] = r"$\oops$"
    axis["width"].attrs["axis_key"] = r"model.$w$"
    axis["bound_60"].attrs["equation"] = r"$\frac{$"
    fig = plot_sweep(axis, path=tmp_path / "dollars2.png")
    (ax,), _ = panels_of(fig)
    assert ax.get_xlabel() == r"width (model.\$w\$)"
    assert r"\$\frac{\$ bound (catapult)" in legend_texts(fig)


def test_diagram_output_is_deterministic(tmp_path):
    ds = axis_sweep(depths=(1, 2), widths=(64, 128, 256), seeds=2)
    plot_sweep(ds, path=tmp_path / "1.png", x="hidden_layers/width")
    plot_sweep(ds.copy(deep=True), path=tmp_path / "2.png", x="hidden_layers/width")
    assert (tmp_path / "1.png").read_bytes() == (tmp_path / "2.png").read_bytes()


@pytest.mark.slow
def test_plot_command_with_axes(tmp_path, capsys):
    path = tmp_path / "axes.nc"
    write_sweep(axis_sweep(depths=(1, 2), widths=(64, 128, 256), seeds=2), path)
    out = tmp_path / "diagram.png"
    assert analysis_main(["plot", str(path), "--x", "hidden_layers/width", "-o", str(out)]) == 0
    assert out.read_bytes().startswith(b"\x89PNG") and "wrote" in capsys.readouterr().out
    assert analysis_main(["plot", str(path), "--select", "width=128", "--select",
                          "hidden_layers=2", "-o", str(tmp_path / "one.svg")]) == 0
    capsys.readouterr()
    assert analysis_main(["plot", str(path), "--x", "depth", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("phasekit: error: --x depth: 'depth' is not an axis")
    assert err.count("\n") == 1
    assert analysis_main(["plot", str(path), "--select", "width=100", "-o", str(out)]) == 2
    assert "its values are 64, 128, 256" in capsys.readouterr().err
    fig = api.load(path).phasekit.plot(x="width", select={"hidden_layers": 2})
    assert len(panels_of(fig)[0]) == 1


def test_a_layer_missing_at_the_selected_point_is_left_out():
    ds = axis_sweep(depths=(1, 2), widths=(64, 128), seeds=2)
    shape = ds["status"].shape + (2,)
    sparsity = np.full(shape, 0.3)
    sparsity[0, ..., 1] = np.nan                   # depth 1 has no second hidden layer
    ds["final_sparsity"] = (ds["status"].dims + ("layer",), sparsity)
    ds = ds.assign_coords(layer=[1, 2])
    shallow = legend_texts(plot_sweep(ds, select=["hidden_layers=1", "width=64"], panels="f"))
    assert "layer 1" not in shallow and "layer 2" not in shallow   # one layer: a plain mean
    assert "mean over converged seeds" in shallow
    deep = legend_texts(plot_sweep(ds, select=["hidden_layers=2", "width=64"], panels="f"))
    assert "layer 1" in deep and "layer 2" in deep


# -- issue 20: figures a new researcher can read ----------------------------------------

def reference_lines(ax) -> list:
    """The labelled reference lines of a panel (horizontal and vertical, drawn with the
    label of their legend entry)."""
    return [line for line in ax.lines if not line.get_label().startswith("_")
            and len(line.get_xdata()) == 2 and (line.get_xdata()[0] == line.get_xdata()[1]
                                                or line.get_ydata()[0] == line.get_ydata()[1])]


def test_the_diagram_draws_the_critical_rates_the_file_holds():
    """A boundary file's refined c_loss and c_max (not the grid's) are the curves."""
    ds = axis_sweep(depths=(2,), seeds=3).squeeze("hidden_layers", drop=True)
    ds.attrs["axes"] = "width"
    grid = critical_rates(ds)
    refined = {q: grid[q] - 0.0123 * (1 + grid["seed"]) for q in ("c_loss", "c_max")}
    for q, v in refined.items():
        ds[q] = v.transpose("width", "seed")
    ds.attrs["boundary_tol"] = 0.01
    (ax,), _ = panels_of(plot_sweep(ds))
    for q, (color, marker) in {"c_loss": ("#08306b", "o"), "c_max": ("#000000", "s")}.items():
        line = errorbar_line(ax, color, marker)
        np.testing.assert_array_equal(line.get_ydata(),
                                      np.median(ds[q].transpose("width", "seed").values, -1))
        assert not np.allclose(line.get_ydata(), np.median(grid[q].values, -1))


def test_a_c_a_column_did_not_evaluate_takes_its_nearest_evaluated_phase():
    ds = axis_sweep(depths=(2,), seeds=1).squeeze("hidden_layers", drop=True)
    ds.attrs["axes"] = "width"
    status = ds["status"].values.copy()
    status[1, :, 10] = "pending"                  # width 128 never ran c = 2.75
    ds["status"] = (ds["status"].dims, status)
    (ax,), _ = panels_of(plot_sweep(ds))
    mesh = next(c for c in ax.collections if isinstance(c, QuadMesh))
    cells = np.ma.getdata(mesh.get_array()).reshape(ds.sizes["eta_lambda0"], 4)
    assert np.isfinite(cells).all()               # no white strip
    assert cells[10, 1] == cells[9, 1] or cells[10, 1] == cells[11, 1]


def test_trajectory_colours_are_distinct_and_the_step_axis_has_every_decade():
    kinds = ["converged_lazy"] * 3 + ["converged_catapult"] * 4 + ["diverged"] * 2
    ds = synthetic_sweep([kinds], [0.5, 1.0, 1.5, 2.4, 2.8, 3.1, 3.8, 4.1, 4.5])
    ds = ds.assign_coords(step=ds["step"] * 50)             # runs of up to 1000 steps
    fig = plot_sweep(ds, panels="a,c")
    loss_ax, sharp_ax = [ax for ax in fig.axes if ax.get_title(loc="left")]
    rates = [line for line in loss_ax.lines if line.get_linestyle() in ("-", "--")]
    assert len(rates) == 5                        # lazy, three catapult, divergent
    rgb = np.array([to_rgb(line.get_color()) for line in rates])
    dist = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1)[np.triu_indices(len(rgb), 1)]
    assert dist.min() > 0.25, dist.min()
    right = loss_ax.get_xlim()[1]
    assert right > 100                            # the fixture's runs last hundreds of steps
    ticks = set(loss_ax.xaxis.get_majorticklocs())
    assert {0.0} | {10.0 ** k for k in range(1, int(np.log10(right)) + 1)} <= ticks
    labels = [t.get_text() for t in loss_ax.get_xticklabels()]
    assert {"0", "10", "100", "1000"} <= set(labels)
    # the edge-of-stability line of (c) is in the legend, in its own style
    (level,) = reference_lines(sharp_ax)
    assert level.get_label() in legend_texts(fig) and level.get_linestyle() == ":"


@pytest.mark.parametrize("n", range(2, 8))
def test_rate_colours_stay_apart(n):
    rgb = np.array([to_rgb(c) for c in rate_colors(n)])
    dist = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1)[np.triu_indices(n, 1)]
    assert dist.min() > 0.25


def test_every_reference_line_has_its_own_style_and_a_label(tmp_path):
    ds = synthetic_sweep([["converged_lazy", "converged_catapult", "converged_catapult",
                           "diverged", "diverged"]], [0.5, 2.5, 3.0, 4.2, 5.0])
    ds["bound_div"] = ds["bound_toy"] * 0 + 3.6
    ds["bound_div"].attrs.update(equation="eq. 1", kind="divergence")
    ds["c_max"] = ds["bound_toy"] * 0 + 3.3
    ds.attrs["boundary_tol"] = 0.01
    fig = plot_sweep(ds, panels="d,e")
    texts = legend_texts(fig)
    for ax in (ax for ax in fig.axes if ax.get_title(loc="left")):
        lines = reference_lines(ax)
        labels = [line.get_label() for line in lines]
        assert len(lines) == 6, labels            # level, c = 2, c = 4, two bounds, c_max
        assert all(label in texts for label in labels)
        styles = {(to_hex(line.get_color()), str(line.get_linestyle())) for line in lines}
        assert len(styles) == len(lines)
        rgb = np.array([to_rgb(line.get_color()) for line in lines])
        dist = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1)[np.triu_indices(len(rgb), 1)]
        assert dist.min() > 0.1
        by_label = {line.get_label().split(" =")[0].split(" (")[0]: line for line in lines}
        c2, cmax = by_label["$c"], by_label[r"$c_{\max}$"]
        assert c2.get_linestyle() != cmax.get_linestyle()


def test_coincident_bounds_are_drawn_once_and_named_together():
    ds = axis_sweep(depths=(2,)).squeeze("hidden_layers", drop=True)
    ds.attrs["axes"] = "width"
    ds["bound_102"] = ds["bound_95"].copy()
    ds["bound_102"].attrs.update(equation="eq. 102", kind="catapult")
    (ax,), _ = panels_of(fig := plot_sweep(ds))
    text = legend_texts(fig)
    assert "eq. 102 = eq. 95 bounds (catapult), equal" in text     # bound names sorted
    assert not any(t.startswith(("eq. 95 bound", "eq. 102 bound")) for t in text)
    want = ds["bound_95"].mean("seed").values
    drawn = [line for line in ax.lines if line.get_marker() == "_" and len(line.get_xdata()) == 4
             and np.allclose(line.get_ydata(), want)]
    assert len(drawn) == 1
    one = plot_sweep(ds, select=["width=64"], panels="d")        # the panels too
    assert "eq. 102 = eq. 95 bounds (catapult), equal, seed mean = 3.12" in legend_texts(one)


def test_the_diagram_legend_is_compact_and_outside_the_panels():
    fig = plot_sweep(axis_sweep(depths=(2,), seeds=3).squeeze("hidden_layers", drop=True)
                     .assign_attrs(axes="width"))
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    (ax,), (legend,) = panels_of(fig)
    whole = fig.get_tightbbox(renderer)
    area = whole.width * whole.height * fig.dpi ** 2
    panel, box = ax.get_window_extent(renderer), legend.get_window_extent(renderer)
    assert panel.width * panel.height > 0.5 * area
    assert box.width * box.height < 0.25 * area
    assert not panel.overlaps(box)


def test_architectures_at_one_x_are_spread_and_one_seed_never_disagrees():
    ds = axis_sweep(depths=(0, 1, 2), widths=(64, 128, 256), seeds=1, trivial=False)
    status = ds["status"].values.copy()
    status[0, 0, 0, 6] = "diverged"               # depth 0, width 64 differs at c = 1.75
    ds["status"] = (ds["status"].dims, status)
    fig = plot_sweep(ds, x="hidden_layers/width")
    (ax,), _ = panels_of(fig)
    text = legend_texts(fig)
    assert SEEDS_DISAGREE not in text             # one seed: nothing to disagree
    assert POINTS_DISAGREE in text
    marks = next(line for line in ax.lines if line.get_marker() == "D")
    np.testing.assert_array_equal(marks.get_xdata(), [0.0])
    np.testing.assert_array_equal(marks.get_ydata(), [1.75])
    depth0 = errorbar_line(ax, "#08306b", "o", ls="-")          # c_loss of depth 0
    x = np.asarray(depth0.get_xdata())
    assert len(np.unique(x)) == 3                 # three widths, three positions
    cell = 1 / 256 / 2                            # the cell of x = 0 ends halfway to 1/256
    assert (np.abs(x) < cell).all()


def tie_sweep():
    """Two seeds that split lazy/catapult at every c in 2.7-3.9 (a scalar model's
    seed ties), lazy below, divergent above."""
    cs = [0.5, 1.0, 1.5, 2.7, 3.0, 3.3, 3.6, 3.9, 4.5]
    one = ["converged_lazy"] * 3 + ["converged_catapult"] * 5 + ["diverged"]
    two = ["converged_lazy"] * 8 + ["diverged"]
    return synthetic_sweep([one, two], cs), cs


def test_a_tie_shows_as_a_tie_and_the_panels_pick_every_phase():
    ds, cs = tie_sweep()
    picks = choose_c(ds)
    assert sum(2.7 <= c <= 3.9 for c in picks) == 3           # catapult from the ties
    assert any(c < 2 for c in picks) and 4.5 in picks and len(picks) == 5
    fig = plot_sweep(ds, panels="a,d")
    assert TIE_LABEL in legend_texts(fig)
    (final_ax,) = [ax for ax in fig.axes if ax.get_title(loc="left").startswith("(d)")]
    hatched = [p for p in final_ax.patches if p.get_hatch()]
    spans = [p.get_path().transformed(p.get_patch_transform()).get_extents() for p in hatched]
    inside = sorted(c for box in spans for c in cs if box.x0 < c < box.x1)  # any axvspan patch
    assert inside == [2.7, 3.0, 3.3, 3.6, 3.9]    # one hatched span per tied c


def test_a_tie_in_the_diagram_is_hatched():
    ds = axis_sweep(depths=(2,), seeds=2).squeeze("hidden_layers", drop=True)
    ds.attrs["axes"] = "width"
    status = ds["status"].values.copy()
    status[2, 0, 3] = "diverged"                  # width 256, c = 1: one seed of two diverges
    ds["status"] = (ds["status"].dims, status)
    fig = plot_sweep(ds)
    (ax,), _ = panels_of(fig)
    assert TIE_LABEL in legend_texts(fig)
    want = tied(phase_counts(classify(ds), "seed").transpose("phase", "width", "eta_lambda0")
                .values).T                        # (c, width)
    assert want[3, 2] and want.sum() > 1
    mesh = next(c for c in ax.collections if isinstance(c, QuadMesh))
    masked = np.ma.getmaskarray(mesh.get_array()).reshape(ds.sizes["eta_lambda0"], 4)
    np.testing.assert_array_equal(masked, want)   # a tie is not coloured as a phase ...
    (ties,) = [c for c in ax.collections if c.get_hatch()]
    assert len(ties.get_paths()) == want.sum()    # ... but hatched


# -- phasekit analyze's text, and hostile files (issue 20 item 9, hardening item 12) -----

def test_negative_ranges_read_as_ranges():
    assert span(-5.664, -5.151) == "-5.664 to -5.151"
    assert span(-0.5, 2.0) == "-0.5 to 2"
    assert span(0.5, 1.9) == "0.5-1.9"
    kinds = [["converged_lazy", "converged_catapult", "diverged"]] * 2
    ds = synthetic_sweep(kinds, [0.5, 2.5, 3.5])
    ds["bound_toy"] = ("seed", [8.1, 8.6], ds["bound_toy"].attrs)     # far above c_max
    text = summary_text(ds)
    (line,) = [t for t in text.splitlines() if t.startswith("bound_toy")]
    assert "c_max - bound = -5.85 +/- 0.35 (range -6.1 to -5.6)" in line, line
    assert "--" not in text


def hostile(stored, tmp_path, name, change):
    ds = api.load(stored)
    ds = change(ds)
    path = tmp_path / f"{name}.nc"
    ds.to_netcdf(path)
    return path


@pytest.mark.parametrize("name, change, plot_error, analyze_ok", [
    ("nan", lambda ds: ds.assign(loss=ds["loss"] * np.nan, sharpness=ds["sharpness"] * np.nan,
                                 final_loss=ds["final_loss"] * np.nan), "panel (a)", True),
    ("inf", lambda ds: ds.assign(loss=ds["loss"] * 0 + np.inf), "panel (a)", True),
    ("nan_c", lambda ds: ds.assign_coords(eta_lambda0=[0.5, 1.5, np.nan, 3.3, 4.5]),
     "eta_lambda0 holds values that are not finite numbers at position(s) 2", False),
    ("config", lambda ds: ds.assign_attrs(config=np.array([1.0, 2.0])),
     "config attribute is not a TOML document", False),
])
def test_hostile_sweep_files_give_one_line(stored, tmp_path, capsys, name, change, plot_error,
                                           analyze_ok):
    path = hostile(stored, tmp_path, name, change)
    assert analysis_main(["plot", str(path), "-o", str(tmp_path / "h.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("phasekit: error:") and "\n" not in err and plot_error in err, err
    if analyze_ok:
        assert analysis_main(["analyze", str(path)]) == 0
    else:
        assert analysis_main(["analyze", str(path)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("phasekit: error:") and "\n" not in err and plot_error in err, err


def test_hostile_datasets_in_python_are_sweep_file_errors(stored):
    ds = api.load(stored)
    with pytest.raises(SweepFileError, match="config attribute of this dataset is not text"):
        plot_sweep(ds.assign_attrs(config=np.array([1, 2])))
    with pytest.raises(SweepFileError, match="config attribute of this dataset is not text"):
        summary_text(ds.assign_attrs(config=np.array([1, 2])))
    with pytest.raises(SweepFileError, match="eta_lambda0 holds values that are not finite"):
        plot_sweep(ds.assign_coords(eta_lambda0=[0.5, np.inf, 2.5, 3.3, 4.5]))
    with pytest.raises(SweepFileError, match=r"panel \(c\) sharpness: 'sharpness' holds no"):
        plot_sweep(ds.assign(sharpness=ds["sharpness"] * np.nan), panels="c")
    plot_sweep(ds.assign(sharpness=ds["sharpness"] * np.nan), panels="a,d")   # the rest draws


# -- the seed-averaged phase diagram (--average seeds) and the log c axis ------------------

def test_the_seed_averaged_diagram_draws_the_mean_traj_rates_the_file_holds():
    """``average="seeds"``: one curve per rate, read from the stored ``_mean_traj``
    variables (here shifted, as a boundary search refines them), no bars and no seed
    disagreement; the cells are the regime of the mean trajectory, so that each column
    is divergent from c_fail on and catapult from c_loss on."""
    ds = axis_sweep(depths=(2,), seeds=3).squeeze("hidden_layers", drop=True)
    ds.attrs["axes"] = "width"
    computed = seed_averaged_rates(ds)
    (ax,), _ = panels_of(plot_sweep(ds, average="seeds"))
    for q, (color, marker) in {"c_loss": ("#08306b", "o"), "c_sharp": ("#d94801", "^"),
                               "c_max": ("#000000", "s")}.items():
        np.testing.assert_array_equal(errorbar_line(ax, color, marker).get_ydata(),
                                      computed[q].values)
    stored = add_seed_averaged(ds)
    for q in ("c_loss", "c_max"):
        stored[f"{q}_mean_traj"] = stored[f"{q}_mean_traj"] - 0.0123 * (1 + stored["width"] / 64)
    fig = plot_sweep(stored, average="seeds")
    (ax,), _ = panels_of(fig)
    for q, (color, marker) in {"c_loss": ("#08306b", "o"), "c_max": ("#000000", "s")}.items():
        line = errorbar_line(ax, color, marker)
        np.testing.assert_array_equal(line.get_ydata(), stored[f"{q}_mean_traj"].values)
        assert not np.allclose(line.get_ydata(), computed[q].values)
    assert not [c for c in ax.collections if isinstance(c, LineCollection)]   # no bars
    text = legend_texts(fig)
    assert SEEDS_DISAGREE not in text and "seeds disagree" not in " ".join(text)
    assert any("\\langle L_t/L_0\\rangle" in t for t in text)
    assert "seed-averaged" in fig._suptitle.get_text()
    mesh = next(c for c in ax.collections if isinstance(c, QuadMesh))
    cells = np.ma.getdata(mesh.get_array()).reshape(ds.sizes["eta_lambda0"], 4)
    cs = ds["eta_lambda0"].values[:, None]
    c_loss, c_fail = computed["c_loss"].values[None, :], computed["c_fail"].values[None, :]
    want = np.where(cs >= c_fail, "divergent", np.where(cs >= c_loss, "catapult", "lazy"))
    assert (np.asarray(VOTING)[cells.astype(int)] == want).all()
    # per seed, the same sweep has seeds that disagree
    assert SEEDS_DISAGREE in legend_texts(plot_sweep(ds))


def test_ylog_puts_c_on_a_log_axis():
    ds = axis_sweep(depths=(1, 2), widths=(64, 128), seeds=1)
    (ax,), _ = panels_of(plot_sweep(ds, x="hidden_layers/width"))
    assert ax.get_yscale() == "linear"                   # c in steps of 0.25: linear
    for kwargs in ({}, {"average": "seeds"}):
        (ax,), _ = panels_of(plot_sweep(ds, x="hidden_layers/width", ylog=True, **kwargs))
        assert ax.get_yscale() == "log"
        lo, hi = ax.get_ylim()                           # geometric cell edges around c
        assert 0 < lo < 0.25 < 8.0 < hi < 9.0


def test_average_and_ylog_refusals_are_one_line(tmp_path, capsys):
    ds = axis_sweep(depths=(1,), widths=(64, 128), seeds=2)
    with pytest.raises(ConfigError, match='--average must be "seeds"') as err:
        plot_sweep(ds, average="mean")
    assert "\n" not in str(err.value)
    flat = synthetic_sweep([["converged_lazy", "diverged"]], [0.5, 5.0])
    with pytest.raises(ConfigError, match=r"^--average seeds draws the phase diagram of a "
                                          r"sweep with axes, but this sweep has no axes"):
        plot_sweep(flat, average="seeds")
    with pytest.raises(ConfigError, match=r"^--average seeds and --ylog draw the phase "
                                          r"diagram .* every axis is fixed \(hidden_layers "
                                          r"= 1, width = 64\)"):
        plot_sweep(ds, select=["width=64"], average="seeds", ylog=True)
    path = tmp_path / "axes.nc"
    write_sweep(ds, path)
    out = tmp_path / "avg.png"
    assert analysis_main(["plot", str(path), "--average", "runs", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith('phasekit: error: --average must be "seeds"') and err.count("\n") == 1
    assert analysis_main(["plot", str(path), "--select", "width=128", "--ylog", "-o",
                          str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("phasekit: error: --ylog draws the phase diagram") and \
        err.count("\n") == 1
    assert not out.exists()
    assert analysis_main(["plot", str(path), "--average", "seeds", "--ylog", "-o",
                          str(out)]) == 0
    assert out.read_bytes().startswith(b"\x89PNG")


def test_the_seed_averaged_cells_fill_what_a_column_did_not_evaluate():
    """A boundary file evaluates each point at its own c: a c where no seed of a point ran
    takes the regime of the nearest evaluated c, as in the per-seed diagram."""
    ds = axis_sweep(depths=(2,), seeds=2).squeeze("hidden_layers", drop=True)
    ds.attrs["axes"] = "width"
    status = ds["status"].values.copy()
    status[1, :, 10] = "pending"                  # width 128 never ran c = 2.75
    ds["status"] = (ds["status"].dims, status)
    assert mean_phase(ds, seed_averaged_rates(ds).attrs).isel(width=1, eta_lambda0=10) \
        == "pending"
    (ax,), _ = panels_of(plot_sweep(ds, average="seeds"))
    mesh = next(c for c in ax.collections if isinstance(c, QuadMesh))
    cells = np.ma.getdata(mesh.get_array()).reshape(ds.sizes["eta_lambda0"], 4)
    assert np.isfinite(cells).all()
    assert cells[10, 1] in (cells[9, 1], cells[11, 1])


def _final_axis(fig, letter: str):
    (ax,) = [ax for ax in fig.axes if ax.get_title(loc="left").startswith(f"({letter})")]
    return ax


def test_a_geometric_grid_of_rates_and_values_over_decades_are_drawn_on_log_axes():
    """Rates spanning a factor of 100 or more (a geometric grid) are drawn on a log c
    axis, each rate's phase span running to the geometric midpoints of its neighbours;
    a panel of positive values over three decades or more gets a log y axis.  The
    paper's linear grids and values near 1 stay linear."""
    cs = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]
    kinds = [["converged_lazy"] * 2 + ["converged_catapult"] * 6 + ["diverged"]] * 2
    ds = synthetic_sweep(kinds, cs)
    growth = np.asarray(cs)[None, :] ** 3                          # 1 ... 1.7e7
    ds["final_weight_norm"] = ds["final_weight_norm"] * growth
    fig = plot_sweep(ds, panels="d,e")
    sharp_ax, norm_ax = _final_axis(fig, "d"), _final_axis(fig, "e")
    assert sharp_ax.get_xscale() == norm_ax.get_xscale() == "log"
    lo, hi = sharp_ax.get_xlim()
    assert lo < 1.0 and hi > 256.0 and hi / 256.0 == pytest.approx(1.0 / lo)
    assert norm_ax.get_yscale() == "log" and sharp_ax.get_yscale() == "linear"
    spans = sorted((round(box.x0, 6), round(box.x1, 6)) for box in
                   (p.get_path().transformed(p.get_patch_transform()).get_extents()
                    for p in sharp_ax.patches))
    assert len(spans) == len(cs)
    for (x0, x1), c in zip(spans, cs, strict=True):
        assert x0 == pytest.approx(c / np.sqrt(2)) and x1 == pytest.approx(c * np.sqrt(2))
    linear = plot_sweep(synthetic_sweep(kinds, [0.1 * k for k in range(1, 61, 7)]),
                        panels="d,e")
    for letter in "de":
        ax = _final_axis(linear, letter)
        assert ax.get_xscale() == "linear" and ax.get_yscale() == "linear"


def test_a_trajectory_panel_over_decades_is_drawn_on_a_log_y_axis():
    """A weight norm that grows by 1e6 in a run that did not diverge puts the
    weight-norm trajectories on a log y axis; without it they stay linear."""
    kinds = [["converged_lazy", "converged_catapult", "converged_catapult"]] * 2
    ds = synthetic_sweep(kinds, [1.0, 2.5, 3.0])
    assert _final_axis(plot_sweep(ds, panels="b"), "b").get_yscale() == "linear"
    weight = ds["weight_norm"].values.copy()
    weight[:, 2, 5:] *= 1e6
    ds["weight_norm"] = (ds["weight_norm"].dims, weight)
    assert _final_axis(plot_sweep(ds, panels="b"), "b").get_yscale() == "log"


def test_diagram_ticks_read_as_numbers_a_reader_writes():
    """x ticks of a ratio axis are fractions (``1/128``, not ``0.00781``), whole numbers
    stay whole, other values keep three digits; a log c axis is labelled 1, 2, 5, 10,
    ... as plain numbers."""
    from phasekit.plot.diagram import tick_label

    assert [tick_label(v) for v in (2 / 256, 4 / 128, 1 / 8, 64.0, 0.3, 2.5)] == [
        "1/128", "1/32", "1/8", "64", "0.3", "2.5"]
    ds = axis_sweep(depths=(0, 2), widths=(64, 256), seeds=1)
    (ax,), _ = panels_of(plot_sweep(ds, x="(hidden_layers+2)/width", ylog=True))
    FigureCanvasAgg(ax.figure).draw()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1/128", "1/64", "1/32", "1/16"]
    shown = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert shown and all(float(text) > 0 for text in shown)
