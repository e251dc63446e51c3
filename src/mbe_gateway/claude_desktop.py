"""Claude Desktop's config file: where it lives, and our MCP server's entry merged into it.

Claude Desktop reads its MCP servers from `claude_desktop_config.json` ("mcpServers": name →
{command, args, env}) and starts each with itself. The file is the user's: other servers and
any other key are kept as they are, a copy is written beside it before it changes
(`claude_desktop_config.json.bak-YYYYmmdd-HHMMSS`), and the new text replaces it in one
rename, so Claude Desktop never reads half a file. A file that is not a JSON object (or whose
"mcpServers" is not one) is refused, untouched, with where it went wrong: guessing at a broken
file could lose the user's other servers.

The entry runs this very installation (`command` is an absolute path, as Claude Desktop
starts servers without the user's shell PATH) and carries MBE_GATEWAY_CONFIG and
MBE_GATEWAY_HOME when they are set, so the server Claude starts sees the same config and data
as the daemon.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from mbe_gateway import paths
from mbe_gateway.errors import ConfigError

Platform = Literal["macos", "windows", "linux"]
PLATFORMS: Final[tuple[Platform, ...]] = ("macos", "windows", "linux")
SERVER_NAME: Final = "mbe-gateway"
FILE_NAME: Final = "claude_desktop_config.json"
Action = Literal["installed", "updated", "unchanged", "removed", "absent"]


@dataclass(frozen=True)
class Change:
    path: Path
    action: Action  # what happened to our entry
    backup: Path | None  # the copy of the file as it was, when it changed


def this_platform() -> Platform:
    if sys.platform == "darwin":
        return "macos"
    return "windows" if sys.platform == "win32" else "linux"


def config_path(
    platform: Platform, *, home: Path | None = None, environ: Mapping[str, str] = os.environ
) -> Path:
    """Where Claude Desktop keeps its config on `platform` (for the user whose home is `home`)."""
    home = home if home is not None else Path.home()
    if platform == "macos":
        return home / "Library" / "Application Support" / "Claude" / FILE_NAME
    if platform == "windows":
        appdata = environ.get("APPDATA")
        base = Path(appdata) if appdata else home / "AppData" / "Roaming"
        return base / "Claude" / FILE_NAME
    xdg = environ.get("XDG_CONFIG_HOME")
    return (Path(xdg) if xdg else home / ".config") / "Claude" / FILE_NAME


def this_command() -> list[str]:
    """How to start this installation's `mbe-gateway`, as absolute paths.

    The script that is running when it is the `mbe-gateway` script (pipx links it into
    ~/.local/bin; that link survives `pipx upgrade`), else the one beside this interpreter,
    else this interpreter with `-m mbe_gateway`.
    """
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is not None and script.stem == "mbe-gateway" and script.exists():
        return [str(script.absolute())]
    for name in ("mbe-gateway", "mbe-gateway.exe"):
        beside = Path(sys.executable).with_name(name)
        if beside.exists():
            return [str(beside.absolute())]
    return [str(Path(sys.executable).absolute()), "-m", "mbe_gateway"]


def server_entry(
    command: Sequence[str], *, config: Path | None = None, environ: Mapping[str, str] = os.environ
) -> dict[str, Any]:
    """Our entry under "mcpServers": `command` + `mcp`, and the config and data dir when set."""
    env: dict[str, str] = {}
    chosen = config if config is not None else environ.get(paths.ENV_CONFIG)
    if chosen:
        env[paths.ENV_CONFIG] = str(Path(chosen).expanduser().absolute())
    home = environ.get(paths.ENV_HOME)
    if home:
        env[paths.ENV_HOME] = str(Path(home).expanduser().absolute())
    entry: dict[str, Any] = {"command": command[0], "args": [*command[1:], "mcp"]}
    if env:
        entry["env"] = env
    return entry


def snippet(entry: Mapping[str, Any]) -> str:
    """The JSON to paste into the file by hand."""
    return _dump({"mcpServers": {SERVER_NAME: dict(entry)}})


def install(path: Path, entry: Mapping[str, Any], *, now: float | None = None) -> Change:
    """Put our entry in the file at `path` (created if absent), keeping everything else."""
    document = _read(path)
    servers = _servers(path, document)
    before = servers.get(SERVER_NAME) if servers is not None else None
    if before == dict(entry):
        return Change(path, "unchanged", None)
    if servers is None:
        servers = document["mcpServers"] = {}
    servers[SERVER_NAME] = dict(entry)
    backup = _write(path, document, now=now)
    return Change(path, "installed" if before is None else "updated", backup)


def uninstall(path: Path, *, now: float | None = None) -> Change:
    """Take our entry out of the file at `path`; nothing else changes."""
    document = _read(path) if path.exists() else {}
    servers = _servers(path, document)
    if servers is None or SERVER_NAME not in servers:
        return Change(path, "absent", None)
    del servers[SERVER_NAME]
    return Change(path, "removed", _write(path, document, now=now))


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot be read ({e}); it was left untouched") from None
    if not text.strip():
        return {}
    try:
        document = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"{path} is not valid JSON ({e.msg}, line {e.lineno} column {e.colno}); it was left "
            "untouched: fix it (Claude Desktop cannot read it either) or move it aside, then run this again"
        ) from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path} holds JSON but not an object ({{...}}); it was left untouched")
    return document


def _servers(path: Path, document: dict[str, Any]) -> dict[str, Any] | None:
    servers = document.get("mcpServers")
    if servers is not None and not isinstance(servers, dict):
        raise ConfigError(f'{path}: "mcpServers" is not an object; it was left untouched')
    return servers


def _write(path: Path, document: Mapping[str, Any], *, now: float | None) -> Path | None:
    """Back the file up (when there is one), then replace it atomically; the backup's path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    backup = None
    if path.exists():
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
        backup = path.with_name(f"{path.name}.bak-{stamp}")
        n = 1
        while backup.exists():
            n += 1
            backup = path.with_name(f"{path.name}.bak-{stamp}-{n}")
        shutil.copy2(path, backup)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(_dump(document))
            f.flush()
            os.fsync(f.fileno())
        if backup is not None:
            shutil.copymode(backup, temp)
        else:
            os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return backup


def _dump(document: Mapping[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
