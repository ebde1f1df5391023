"""Shared fixtures: the component comes from the installed package (or
``$MARIONETTE_COMPONENT``), compiled once per process by the package itself."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

#: The repository root (the tests read its examples and conformance cases).
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _guest_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="marionette")
