"""Shared fixtures: one local Ray instance per test session (Ray start-up costs 5-10 s)."""

from __future__ import annotations

import os

import pytest

# Set before Ray is imported anywhere: a local head started only for tests needs no token
# auth (Ray 2.60 turns it on once ~/.ray/auth_token exists), and no usage stats offline.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray head shared by every Ray test of the session."""
    import ray

    from wgen.core.runtime import init_ray

    # 4 logical CPUs on a 2-core machine: fractional actors plus read tasks never starve.
    init_ray(num_cpus=4)
    yield ray
    ray.shutdown()
