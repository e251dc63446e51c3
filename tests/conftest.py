"""Fixtures shared across the suite: an isolated home for each test, and the anyio backend.

Every test runs with its own MBE_GATEWAY_HOME and MBE_GATEWAY_CONFIG under tmp_path, so no
test can read or write the developer's real config, data or secrets.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private data dir and config path for this test (the dir exists, the config does not)."""
    data = tmp_path / "home"
    data.mkdir()
    monkeypatch.setenv("MBE_GATEWAY_HOME", str(data))
    monkeypatch.setenv("MBE_GATEWAY_CONFIG", str(tmp_path / "config.toml"))
    for name in [n for n in os.environ if n.startswith("MBE_GATEWAY_SECRET_")]:
        monkeypatch.delenv(name)
    return data
