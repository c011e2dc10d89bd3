"""Shared fixtures: encoders (tests/fixtures/encoder_fixtures.py) and a real Tansu broker per session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

pytest_plugins = ["tests.fixtures.encoder_fixtures", "tests.fixtures.kafka_fixtures"]


def pytest_collection_modifyitems(items):
    # Tests that start a broker are marked `integration`, so `-m "not integration"` gives the fast tier.
    for item in items:
        if "broker" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)
