"""Lava tests run where Lava runs and are skipped, with the reason, elsewhere.

lava-nc 0.10.0 needs numpy <2, so on Python 3.13+ (numpy 2 only) it is not
installed. Every test that needs Lava carries ``@pytest.mark.lava``; where
Lava cannot be imported those tests are skipped with the backend's own
explanation (Python version and fix), shown by ``-rs`` in every run. With
DEEPR_NEURO_REQUIRE_LAVA=1 (CI's main pass on Python 3.11) nothing is skipped
and a missing Lava fails those tests instead.
"""
from __future__ import annotations

import os

import pytest


def lava_skip_reason():
    """Why Lava tests cannot run here (None if they can or must)."""
    if os.environ.get("DEEPR_NEURO_REQUIRE_LAVA") == "1":
        return None
    from deepr_neuro.simulate.registry import lava_unavailable_reason
    return lava_unavailable_reason()


def pytest_collection_modifyitems(config, items):
    lava_items = [item for item in items if item.get_closest_marker("lava") is not None]
    if not lava_items:
        return
    reason = lava_skip_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"Lava absent here: {reason}")
    for item in lava_items:
        item.add_marker(skip)
