"""What installing or removing the service does, as data: files to write or remove, commands to run.

A plan is built first and carried out second, so `--dry-run` prints exactly what a real run
would do (the same plan), and tests can check the plan for either platform on any machine.
The commands are the OS service manager's own (`systemctl --user`, `launchctl`), found on
PATH; nothing here needs root.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mbe_gateway.errors import ServiceError
from mbe_gateway.services.units import (
    LABEL,
    PLIST_NAME,
    UNIT_NAME,
    ServiceSpec,
    render_launchd,
    render_systemd,
)

Platform = Literal["linux", "macos"]
PLATFORMS: tuple[Platform, ...] = ("linux", "macos")


@dataclass(frozen=True)
class Directory:
    path: Path

    def __str__(self) -> str:
        return f"mkdir -p {shlex.quote(str(self.path))}"


@dataclass(frozen=True)
class Write:
    path: Path
    text: str = field(repr=False)

    def __str__(self) -> str:
        return f"write {self.path} ({len(self.text.splitlines())} lines)"


@dataclass(frozen=True)
class Removal:
    path: Path

    def __str__(self) -> str:
        return f"rm {shlex.quote(str(self.path))}"


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    may_fail: bool = False  # e.g. `launchctl bootout` of a job that was not loaded

    def __str__(self) -> str:
        return shlex.join(self.argv) + ("  # may fail: nothing to stop" if self.may_fail else "")


Step = Directory | Write | Removal | Command


@dataclass(frozen=True)
class Plan:
    """The steps, in the order they run; `str(step)` is a line a person can read (and run)."""

    steps: tuple[Step, ...] = ()

    def describe(self) -> list[str]:
        return [str(step) for step in self.steps]


def service_file(platform: Platform, user_home: Path, environ: dict[str, str] | None = None) -> Path:
    """Where the service manager looks for our file: the systemd user unit dir
    ($XDG_CONFIG_HOME/systemd/user, else ~/.config/systemd/user) or ~/Library/LaunchAgents."""
    if platform == "macos":
        return user_home / "Library" / "LaunchAgents" / PLIST_NAME
    environ = os.environ.copy() if environ is None else environ
    xdg = environ.get("XDG_CONFIG_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else user_home / ".config"
    return base / "systemd" / "user" / UNIT_NAME


def plan_install(platform: Platform, spec: ServiceSpec, target: Path, uid: int) -> Plan:
    """Write the file and start the service; a re-install replaces the file and restarts it."""
    reinstall = target.exists()
    if platform == "linux":
        steps: list[Step] = [
            Directory(target.parent),
            Write(target, render_systemd(spec)),
            Command(("systemctl", "--user", "daemon-reload")),
            Command(("systemctl", "--user", "enable", "--now", UNIT_NAME)),
        ]
        if reinstall:  # `enable --now` would leave a running daemon on the old unit
            steps.append(Command(("systemctl", "--user", "restart", UNIT_NAME)))
        return Plan(tuple(steps))
    domain = f"gui/{uid}"
    steps = [Directory(target.parent), Directory(spec.log_dir)]
    if reinstall:  # launchd keeps the loaded copy until the job is booted out
        steps.append(Command(("launchctl", "bootout", f"{domain}/{LABEL}"), may_fail=True))
    steps += [
        Write(target, render_launchd(spec)),
        Command(("launchctl", "enable", f"{domain}/{LABEL}")),  # undoes an earlier `launchctl disable`
        Command(("launchctl", "bootstrap", domain, str(target))),
    ]
    return Plan(tuple(steps))


def plan_uninstall(platform: Platform, target: Path, uid: int) -> Plan:
    """Stop and disable the service, then remove its file; empty when nothing is installed."""
    if not target.exists():
        return Plan()
    if platform == "linux":
        return Plan(
            (
                Command(("systemctl", "--user", "disable", "--now", UNIT_NAME)),
                Removal(target),
                Command(("systemctl", "--user", "daemon-reload")),
            )
        )
    return Plan((Command(("launchctl", "bootout", f"gui/{uid}/{LABEL}"), may_fail=True), Removal(target)))


def carry_out(plan: Plan) -> None:
    """Do the plan's steps in order, stopping at the first failure: a ServiceError that names
    the command or file and what went wrong."""
    for step in plan.steps:
        try:
            if isinstance(step, Directory):
                step.path.mkdir(parents=True, exist_ok=True)
            elif isinstance(step, Write):
                _write(step.path, step.text)
            elif isinstance(step, Removal):
                step.path.unlink(missing_ok=True)
            else:
                _check(step, _run(step.argv))
        except OSError as e:
            where = step.path if not isinstance(step, Command) else step.argv[0]
            raise ServiceError(f"{where}: {e.strerror or e}") from None


def _run(argv: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError:
        raise ServiceError(
            f"`{argv[0]}` is not installed here; this machine's service manager is needed "
            "(or run `mbe-gateway run` under your own supervisor)"
        ) from None
    except subprocess.TimeoutExpired:
        raise ServiceError(f"`{shlex.join(argv)}` did not answer within 60 s") from None


def _check(command: Command, done: subprocess.CompletedProcess[str]) -> None:
    if done.returncode == 0 or command.may_fail:
        return
    said = (done.stderr or done.stdout or "").strip().splitlines()
    message = f"`{shlex.join(command.argv)}` failed (exit {done.returncode})"
    if said:
        message += f": {said[-1]}"
    if command.argv[:2] == ("systemctl", "--user") and any("bus" in line.lower() for line in said):
        message += (
            "; there is no systemd user session in this shell (over ssh or su, log in as the user "
            "directly, or export XDG_RUNTIME_DIR=/run/user/$(id -u))"
        )
    raise ServiceError(message)


def _write(path: Path, text: str) -> None:
    """Replace the file atomically: a service manager never reads half a unit."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
