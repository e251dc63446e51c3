"""The service files for this machine: a systemd user unit and a launchd LaunchAgent plist.

The templates ship inside the package (`services/templates/`, the one canonical copy; the
repo's top-level `systemd/` and `launchd/` are symlinks to them), so a wheel installed by pipx
can render them with no checkout around. Rendering fills `{name}` placeholders with values
escaped for the file's own syntax: systemd's quoting and `%` specifiers, XML for the plist.
A value the syntax cannot carry (a newline in a path) is refused rather than mangled.
"""

from __future__ import annotations

import math
import os
import re
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Final
from xml.sax.saxutils import escape as xml_escape

from mbe_gateway.errors import ServiceError

UNIT_NAME: Final = "mbe-gateway.service"
LABEL: Final = "org.mbe-gateway"
PLIST_NAME: Final = f"{LABEL}.plist"

RESTART_SEC: Final = 10  # seconds between a crash and the restart (launchd: ThrottleInterval)
START_LIMIT_INTERVAL: Final = 300  # systemd gives up after START_LIMIT_BURST starts in this many s
START_LIMIT_BURST: Final = 5
ENGINE_STOP: Final = 4.0  # the MCP SDK stops a stdio child in at most 2 s (stdin closed) + 2 s (SIGTERM)
STOP_MARGIN: Final = 10.0  # a slow, contended machine's share on top of the daemon's own budget

_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True)
class ServiceSpec:
    """What differs from one machine to the next: how to start the daemon, and where its files are."""

    command: tuple[str, ...]  # the daemon's argv, absolute: (<venv>/bin/mbe-gateway, "run")
    config: Path  # MBE_GATEWAY_CONFIG
    home: Path  # MBE_GATEWAY_HOME, the data dir
    path: str  # PATH for the daemon (an MBE `command` or Ollama's CLI is found on it)
    drain_seconds: float  # [gateway] drain_seconds: the stop timeout is sized from it
    environment_file: Path  # systemd: optional MBE_GATEWAY_SECRET_<NAME>=... lines, for keyring-less boxes

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"


def daemon_command() -> tuple[str, ...]:
    """The absolute command that runs this very installation's daemon.

    The `mbe-gateway` script beside the running interpreter (in a pipx venv: the venv's own
    bin/, not the ~/.local/bin symlink that a later install could repoint), else the
    interpreter with `-m mbe_gateway`. Not `shutil.which` (it may find another install first)
    and not `sys.argv[0]` (relative, or __main__.py under `python -m`). `sys.executable` is
    made absolute but not resolved: a venv's python is a symlink, and resolving it would leave
    the venv.
    """
    python = Path(os.path.abspath(sys.executable))
    script = python.with_name("mbe-gateway")
    if script.is_file() and os.access(script, os.X_OK):
        return (str(script), "run")
    return (str(python), "-m", "mbe_gateway", "run")


def stop_timeout(drain_seconds: float) -> int:
    """Seconds between SIGTERM and SIGKILL: the daemon's whole stop must fit inside.

    A stop is the drain (`drain_seconds`), the outbox's grace, the queued memory writes'
    bound, then the engine child's stop; a margin on top for a contended machine.
    """
    from mbe_gateway.assistant import DRAIN_WITHIN
    from mbe_gateway.gateway import SEND_GRACE

    return math.ceil(drain_seconds + SEND_GRACE + DRAIN_WITHIN + ENGINE_STOP + STOP_MARGIN)


def template(name: str) -> str:
    """A template's text, read from the installed package (a wheel, a checkout, a zip)."""
    return resources.files("mbe_gateway.services").joinpath("templates", name).read_text(encoding="utf-8")


def render_systemd(spec: ServiceSpec) -> str:
    """The user unit for this machine."""
    return _fill(
        template(UNIT_NAME),
        exec_start=" ".join(_systemd_word(word) for word in spec.command),
        env_config=_systemd_assignment("MBE_GATEWAY_CONFIG", str(spec.config)),
        env_home=_systemd_assignment("MBE_GATEWAY_HOME", str(spec.home)),
        env_path=_systemd_assignment("PATH", spec.path),
        environment_file=_systemd_path(spec.environment_file),
        restart_sec=str(RESTART_SEC),
        start_limit_interval=str(START_LIMIT_INTERVAL),
        start_limit_burst=str(START_LIMIT_BURST),
        timeout_stop=str(stop_timeout(spec.drain_seconds)),
    )


def render_launchd(spec: ServiceSpec) -> str:
    """The LaunchAgent plist for this machine."""
    return _fill(
        template(PLIST_NAME),
        label=LABEL,
        program_arguments="\n".join(f"    <string>{_xml(word)}</string>" for word in spec.command),
        config=_xml(str(spec.config)),
        home=_xml(str(spec.home)),
        path=_xml(spec.path),
        restart_sec=str(RESTART_SEC),
        timeout_stop=str(stop_timeout(spec.drain_seconds)),
        stdout=_xml(str(spec.log_dir / "launchd.out.log")),
        stderr=_xml(str(spec.log_dir / "launchd.err.log")),
    )


def _fill(text: str, **values: str) -> str:
    """Replace every `{name}`; a template naming an unknown placeholder is a bug, said loudly."""

    def value(match: re.Match[str]) -> str:
        name = match[1]
        if name not in values:
            raise KeyError(f"the template has a placeholder {{{name}}} that nothing fills")
        return values[name]

    return _PLACEHOLDER.sub(value, text)


def _refuse_control(value: str) -> str:
    if any(ord(c) < 32 for c in value):
        raise ServiceError(
            f"{value!r} contains a newline or control character, which a service file cannot carry; "
            "move the file to a plain path"
        )
    return value


def _systemd_word(word: str) -> str:
    """One ExecStart argument: `%` is a specifier and `$` a variable to systemd, so both are
    doubled; a word with spaces or quotes is double-quoted, with C-style escapes."""
    word = _refuse_control(word).replace("%", "%%").replace("$", "$$")
    if word and not re.search(r'[\s"\'\\;]', word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _systemd_assignment(name: str, value: str) -> str:
    """One Environment= assignment, always quoted (no `$` expansion happens there; `%` does)."""
    text = f"{name}={_refuse_control(value)}".replace("%", "%%")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _systemd_path(path: Path) -> str:
    """A path setting (EnvironmentFile=): unquoted, specifiers escaped; systemd takes the rest
    of the line, spaces included."""
    return _refuse_control(str(path)).replace("%", "%%")


def _xml(value: str) -> str:
    return xml_escape(_refuse_control(value), {'"': "&quot;"})
