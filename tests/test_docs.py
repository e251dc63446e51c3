"""The configuration guide covers every key the program accepts."""

from __future__ import annotations

import re
from pathlib import Path

from mbe_gateway.config import default_config_text

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_every_config_key_in_the_default_file_is_documented() -> None:
    guide = (DOCS / "configuration.md").read_text(encoding="utf-8")
    keys = set(re.findall(r"(?m)^#\s+([a-z_]+) = ", default_config_text()))
    keys |= set(re.findall(r"(?m)^\[([a-z_.]+)\]$", default_config_text()))
    assert keys, "the default config file lists no keys?"
    missing = sorted(k for k in keys if f"`{k}`" not in guide and f"`[{k}]`" not in guide)
    assert missing == [], f"docs/configuration.md does not mention: {missing}"
