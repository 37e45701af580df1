"""Tests must not depend on the terminal they run in: every Rich console sees 80 columns."""

import pytest


@pytest.fixture(autouse=True)
def _eighty_columns(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("LINES", "25")
