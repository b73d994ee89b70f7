"""A third-party model plugin, as its own distribution would ship it.

A two-layer tanh network ``z = v . tanh(U x) / sqrt(n)``.  Only the outputs are
written; phasekit takes the gradient and the NTK from autograd.  Its
distribution declares, in its pyproject.toml::

    [project.entry-points.phasekit]
    tanh_net = "phasekit_tanh_net"
"""

from __future__ import annotations

import math

import torch

from phasekit import hookimpl
from phasekit.model import Model
from phasekit.options import Option, positive


class TanhNet(Model):
    name = "tanh_net"
    description = "two-layer tanh network z = v.tanh(Ux)/sqrt(n)"
    options = {"width": Option(64, "number of hidden units n", check=positive)}

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
        hidden = torch.tanh(torch.einsum("gnd,ad->gan", U, inputs[split]))
        return (hidden * v[:, None, :]).sum(-1) / math.sqrt(n), None


@hookimpl
def phasekit_register_models(register):
    register(TanhNet)
