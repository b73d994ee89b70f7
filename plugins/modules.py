"""Networks written as torch.nn.Module subclasses (:class:`phasekit.module.ModuleModel`):
``small_cnn``, the example that opens docs/plugins.md, and its preset ``cnn_fmnist``
(docs/phases.md).

The CNN is the docs' ten lines as they stand: one 5 x 5 convolution of stride 3 with a
few channels, ReLU, and a linear readout, torch's default initialisation drawn under
the run's seed.  It is kept small (8 channels by default, 721 parameters) because
float64 convolutions under ``vmap`` are slow on a CPU.  The preset widens it to 32
channels (2881 parameters) and trains 64 images with pixels in [0, 1]
(``input_scale = "none"``): with the default x/sqrt(d) the inputs are so small next to
the convolution's bias that every image gives nearly the same features, the NTK is
dominated by one direction and, once that is fitted, the loss stalls near L_0.
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
    "model": {"name": "small_cnn", "channels": 32},
    "dataset": {"name": "fmnist", "num_train": 64, "max_test": 512, "input_scale": "none"},
    "sweep": {"eta_lambda0": [1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 11.0, 16.0,
                              22.0, 32.0, 45.0, 64.0, 90.0, 128.0, 180.0, 256.0],
              "seeds": [0, 1], "max_steps": 500, "tol": 1e-5, "record_dense": 40,
              "record_per_decade": 10, "threads": 0},
}


@hookimpl
def phasekit_register_models(register):
    register(SmallCNN)


@hookimpl
def phasekit_register_presets(register):
    register("cnn_fmnist", CNN_FMNIST,
             "a small CNN written as a torch.nn.Module (small_cnn: conv 5x5/3, 32 channels, "
             "ReLU, linear readout) on 64 two-class Fashion-MNIST images (pixels in [0, 1]), "
             "c from 1.25 to 256, 2 seeds")


__all__ = ["CNN_FMNIST", "SmallCNN"]
