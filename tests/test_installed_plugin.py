"""The suite ignores the user's environment: with third-party phasekit plugins installed
(distributions with entry points in the ``phasekit`` group, on the path of a fresh
interpreter), the plugin tests still pass, and phasekit still loads those plugins."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

from .test_plugins import EXAMPLE, install_fake_distribution

ROOT = Path(__file__).parents[1]

#: a uv model as its own distribution ships it (it passes phasekit.testing.check_model),
#: with an observable of its own and a preset
UV_PLUGIN = textwrap.dedent('''
    """A two-layer linear network z = v . (U x) / sqrt(n), with autograd NTK."""

    import math

    import torch

    from phasekit import hookimpl
    from phasekit.model import Model
    from phasekit.observables import Observable
    from phasekit.options import Option, positive


    class UVDemo(Model):
        name = "uv_demo"
        description = "two-layer linear network z = v.(Ux)/sqrt(n)"
        options = {"width": Option(32, "number of hidden units n", check=positive)}
        homogeneous = True

        def setup(self, seed, device, dtype):
            gen = torch.Generator().manual_seed(seed)
            n, d = self.settings["width"], self.data.input_dim
            theta0 = torch.randn(n * d + n, generator=gen, dtype=torch.float64)
            splits = ["train"] + (["test"] if self.data.has_test else [])
            inputs = {s: self.data.inputs(s).to(device, dtype) for s in splits}
            return inputs, theta0.to(device, dtype)

        def forward(self, inputs, theta, split="train"):
            n, d = self.settings["width"], self.data.input_dim
            U = theta[:, : n * d].reshape(-1, n, d)
            v = theta[:, n * d:]
            hidden = torch.einsum("gnd,ad->gan", U, inputs[split])
            return (hidden * v[:, None, :]).sum(-1) / math.sqrt(n), None


    def largest_output(snap):
        return snap.z.abs().amax(-1)


    @hookimpl
    def phasekit_register_models(register):
        register(UVDemo)


    @hookimpl
    def phasekit_register_observables(register):
        register(Observable(name="uv_demo_largest_output",
                            long_name="largest |z| on the training set",
                            compute=largest_output,
                            applies=lambda model, data: model.name == "uv_demo"))


    @hookimpl
    def phasekit_register_presets(register):
        register("uv_demo", {"model": {"name": "uv_demo", "width": 64},
                             "dataset": {"name": "toy"}, "sweep": {"seeds": 2}},
                 "the uv model on the toy data")
    ''')

#: a noisier neighbour: it registers a model named like a built-in one, so phasekit
#: keeps the built-in and warns every time the models are collected
SHADOW_PLUGIN = textwrap.dedent('''
    from phasekit import hookimpl
    from phasekit_plugins.homogeneous import ReLU


    class OtherReLU(ReLU):
        description = "someone else's relu"


    @hookimpl
    def phasekit_register_models(register):
        register(OtherReLU)
    ''')


def install_site(root: Path) -> Path:
    """One site folder holding three distributions, as pip would lay them out."""
    site = install_fake_distribution(root, "phasekit-uv-demo", "0.1",
                                     {"uv_demo": "phasekit_uv_demo"})
    (site / "phasekit_uv_demo.py").write_text(UV_PLUGIN)
    install_fake_distribution(root, "phasekit-shadow", "2.0", {"shadow": "phasekit_shadow"})
    (site / "phasekit_shadow.py").write_text(SHADOW_PLUGIN)
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    install_fake_distribution(root, project["name"], project["version"],
                              project["entry-points"]["phasekit"])
    shutil.copy(EXAMPLE / "phasekit_tanh_net.py", site)
    return site


def test_plugin_tests_pass_with_third_party_plugins_installed(tmp_path):
    site = install_site(tmp_path)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PHASEKIT_PLUGINS", "PHASEKIT_DISABLE_PLUGINS")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))

    # phasekit sees them: it loads every installed plugin
    exe = os.path.join(os.path.dirname(sys.executable), "phasekit")
    proc = subprocess.run([exe, "plugins"], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()]
    for kind, name in (("model", "uv_demo"), ("observable", "uv_demo_largest_output"),
                       ("preset", "uv_demo")):
        assert [kind, name, "phasekit-uv-demo", "0.1", "uv_demo"] in rows
    assert ["model", "tanh_net", "phasekit-tanh-net", "0.3", "tanh_net"] in rows
    assert ["model", "relu", "phasekit"] in [r[:3] for r in rows]
    assert ("phasekit plugin 'shadow' registers model 'relu', already provided by "
            "'homogeneous' (phasekit); keeping the first.") in proc.stderr

    # and the plugin tests pass all the same
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/test_plugins.py", "tests/test_contract.py::test_every_builtin_model_is_checked"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in summary and "failed" not in summary and "error" not in summary
