"""Fixtures of the simulation tests: tools/simulate.py loaded as a module."""

from __future__ import annotations

import importlib.util
import logging
import pathlib
import sys

import pytest


@pytest.fixture
def simulate_cli(monkeypatch):
    """tools/simulate.py as a module (its `main(argv)` returns the failing seeds' count);
    the logging it silences process-wide is restored afterwards."""
    path = pathlib.Path(__file__).parents[2] / "tools" / "simulate.py"
    spec = importlib.util.spec_from_file_location("simulate_cli", path)
    assert spec is not None and spec.loader is not None
    cli = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "simulate_cli", cli)  # (its dataclass looks itself up)
    spec.loader.exec_module(cli)
    yield cli
    logging.disable(logging.NOTSET)
