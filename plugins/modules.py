"""Networks written as torch.nn.Module subclasses (:class:`phasekit.module.ModuleModel`):
``small_cnn``, the example that opens docs/plugins.md, and its preset ``cnn_fmnist``
(docs/phases.md).

The CNN is the docs' ten lines as they stand: one 5 x 5 convolution of stride 3 with a
few channels, ReLU, and a linear readout, torch's default initialisation drawn under
the run's seed.  It is kept small (8 channels, 721 parameters) because float64
convolutions under ``vmap`` are slow on a CPU; the preset trains 128 images for at most
500 steps.
"""

from __future__ import annotations

from torch import nn

from phasekit import hookimpl
from phasekit.module import ModuleModel
from phasekit.options import Option, positive


class SmallCNN(ModuleModel):
    name = "small_cnn"
    description = "a small CNN as a torch.nn.Module: conv 5x5 stride 3, ReLU, linear readout"
    options = {"channels": Option(8, "convolution channels", check=positive)}

    def build(self):
        return nn.Sequential(nn.Unflatten(1, (1, 28, 28)),
                             nn.Conv2d(1, self.settings["channels"], 5, stride=3),
                             nn.ReLU(), nn.Flatten(), nn.LazyLinear(1))


CNN_FMNIST = {
    "model": {"name": "small_cnn", "channels": 8},
    "dataset": {"name": "fmnist", "num_train": 128, "max_test": 512},
    "sweep": {"eta_lambda0": {"start": 0.5, "stop": 12.0, "num": 16}, "seeds": [0, 1],
              "max_steps": 500, "tol": 1e-6, "record_dense": 40, "record_per_decade": 20,
              "threads": 0},
}


@hookimpl
def phasekit_register_models(register):
    register(SmallCNN)


@hookimpl
def phasekit_register_presets(register):
    register("cnn_fmnist", CNN_FMNIST,
             "a small CNN written as a torch.nn.Module (small_cnn: conv 5x5/3, 8 channels, "
             "ReLU, linear readout) on 128 two-class Fashion-MNIST images, 2 seeds")


__all__ = ["CNN_FMNIST", "SmallCNN"]
