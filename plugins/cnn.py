"""A small convolutional net on images, through :class:`phasekit.module.ModuleModel`:
``small_cnn``, and the preset ``cnn_fmnist``.

The whole model is its ``build``: no closed form of the forward pass, the gradient or
the NTK is written anywhere; the core derives them from the module (docs/plugins.md,
"Any torch.nn.Module").  One convolution (5 x 5, ``channels`` filters, no padding), a
ReLU and a linear readout, in standard parameterisation with PyTorch's default
initialisation; the input is a flat image of ``side x side`` pixels.
"""

from __future__ import annotations

import math

from torch import nn

from phasekit import hookimpl
from phasekit.errors import ConfigError
from phasekit.module import ModuleModel
from phasekit.options import Option, positive


class SmallCNN(ModuleModel):
    """conv 5x5 (``channels``) -> ReLU -> linear readout, on flat square images."""

    name = "small_cnn"
    description = "small CNN: conv 5x5 -> ReLU -> linear readout (a torch.nn.Module model)"
    options = {"channels": Option(8, "filters of the convolution", check=positive)}

    @classmethod
    def resolve(cls, settings, data):
        side = math.isqrt(data.input_dim)
        if side * side != data.input_dim or side < 5:
            raise ConfigError(f"model.name = \"small_cnn\" needs square images of side >= 5 "
                              f"as flat inputs; this dataset has input dimension "
                              f"{data.input_dim}")
        return dict(settings)

    def build(self):
        side = math.isqrt(self.data.input_dim)
        channels = self.settings["channels"]
        return nn.Sequential(nn.Unflatten(1, (1, side, side)),
                             nn.Conv2d(1, channels, 5), nn.ReLU(), nn.Flatten(),
                             nn.Linear(channels * (side - 4) ** 2, 1))


@hookimpl
def phasekit_register_models(register):
    register(SmallCNN)


@hookimpl
def phasekit_register_presets(register):
    register("cnn_fmnist",
             {"model": {"name": "small_cnn", "channels": 8},
              "dataset": {"name": "fmnist", "num_train": 128, "max_test": 512},
              "sweep": {"eta_lambda0": [0.5, 1.0, 1.5, 1.75, 2.0, 2.25, 2.5, 3.0, 3.5, 4.0,
                                        5.0, 6.0, 8.0, 10.0],
                        "seeds": 2, "max_steps": 1000, "tol": 1e-7}},
             "small CNN (a torch.nn.Module through phasekit.module.ModuleModel: no closed "
             "form written) on two-class Fashion-MNIST, 128 images, 2 seeds")


__all__ = ["SmallCNN"]
