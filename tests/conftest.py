"""Shared fixtures and Hypothesis profiles.

Profiles: ``ci`` (default, fast) and ``thorough`` (many more examples); pick
one with ``PHASEKIT_HYPOTHESIS_PROFILE=thorough``.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

from phasekit.config.registry import get_plugin_manager

# "ci" (the default) draws the same examples on every run (derandomize): a gate that
# lands or refuses a change must not pass or fail by the draw. "thorough" explores
# new random examples each time; run it to look for counterexamples.
settings.register_profile("ci", max_examples=12, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=300, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("PHASEKIT_HYPOTHESIS_PROFILE", "ci"))

# The user's choice of plugins is not the suite's: every test sees what is installed
# (the tests of these variables set them themselves, subprocesses included).
for _var in ("PHASEKIT_PLUGINS", "PHASEKIT_DISABLE_PLUGINS"):
    os.environ.pop(_var, None)

# Small matrices: one BLAS thread is faster than two, and much faster on a busy
# machine (sweeps pin their own threads through sweep.threads anyway).
torch.set_num_threads(1)


def pytest_configure(config):
    """Under ATEN_CPU_CAPABILITY (tox's kernels-* envs), refuse to run on other kernels
    than the ones asked for: torch quietly falls back to the best the CPU has."""
    requested = os.environ.get("ATEN_CPU_CAPABILITY")
    in_effect = torch.backends.cpu.get_cpu_capability()
    if requested and requested.lower() != in_effect.lower():
        raise pytest.UsageError(
            f"ATEN_CPU_CAPABILITY={requested} but torch runs its {in_effect} CPU kernels (this "
            f"CPU lacks {requested}, or the value is not one of default, avx2, avx512); run "
            f"this on a machine that has {requested}, or leave ATEN_CPU_CAPABILITY unset")


def pytest_report_header(config):
    requested = os.environ.get("ATEN_CPU_CAPABILITY")
    return (f"torch {torch.__version__}, CPU kernels {torch.backends.cpu.get_cpu_capability()}"
            + (f" (ATEN_CPU_CAPABILITY={requested})" if requested else ""))


@pytest.fixture(scope="session")
def manager():
    return get_plugin_manager()
