"""Shared test settings."""

import os

import pytest
from threadpoolctl import threadpool_limits

# No network, no telemetry: Flower and Ray must never phone home from a test.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")


@pytest.fixture(autouse=True, scope="session")
def _one_blas_thread():
    # Two cores shared by test workers: multi-threaded BLAS/OpenMP pools spin
    # against each other and slow small fits down by an order of magnitude.
    with threadpool_limits(1):
        yield
