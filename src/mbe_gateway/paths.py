"""Where mbe-gateway keeps its files, and the environment variables that move them.

Kept apart from config.py because the embedded engine (a separate process that must not
import the gateway) needs the same answer for its own database.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP = "mbe-gateway"
ENV_CONFIG = "MBE_GATEWAY_CONFIG"
ENV_HOME = "MBE_GATEWAY_HOME"
ENV_SECRET_PREFIX = "MBE_GATEWAY_SECRET_"  # noqa: S105 (a name prefix, not a secret)


def config_file() -> Path:
    """The config file: $MBE_GATEWAY_CONFIG, else config.toml in the platform's config dir."""
    override = os.environ.get(ENV_CONFIG)
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_config_dir(APP, appauthor=False)) / "config.toml"


def data_dir() -> Path:
    """The data dir (databases, logs): $MBE_GATEWAY_HOME, else the platform's data dir."""
    override = os.environ.get(ENV_HOME)
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_data_dir(APP, appauthor=False))


def gateway_db() -> Path:
    return data_dir() / "gateway.sqlite3"


def engine_db() -> Path:
    return data_dir() / "engine.sqlite3"
