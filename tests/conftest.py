"""Shared test fixtures. Fake outside systems live in tests/fakes/."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.pg import pg_server, store_url  # noqa: F401  (fixtures: a throwaway PostgreSQL, a URL for either store)

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


@pytest.fixture
def shared_dir() -> Path:
    """``../shared`` beside the checkout (specs and fixtures); skip when it is not there."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: the shared specs/fixtures folder is needed for this test")
    return SHARED


@pytest.fixture
def write_config(tmp_path: Path):
    """Write a TOML config into tmp_path and return its path: ``write_config('''[rfm] ...''')``."""

    def write(text: str, name: str = "config.toml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


@pytest.fixture
def write_csv(tmp_path: Path):
    """Write a CSV (header + rows) into tmp_path and return its path."""

    def write(text: str, name: str = "orders.csv") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
        return path

    return write
