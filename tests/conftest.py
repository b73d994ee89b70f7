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

settings.register_profile("ci", max_examples=12, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=300, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("PHASEKIT_HYPOTHESIS_PROFILE", "ci"))

# Small matrices: one BLAS thread is faster than two, and much faster on a busy
# machine (sweeps pin their own threads through sweep.threads anyway).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def manager():
    return get_plugin_manager()
