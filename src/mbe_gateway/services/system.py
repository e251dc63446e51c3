"""This machine as the service commands see it: which service manager, which user, the spec
to render, and the read-only commands behind `service status` and `service logs`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mbe_gateway import paths
from mbe_gateway.config import Config
from mbe_gateway.errors import ServiceError
from mbe_gateway.services.plan import Platform
from mbe_gateway.services.units import LABEL, UNIT_NAME, ServiceSpec, daemon_command

ENVIRONMENT_FILE = "service.env"  # beside the config: MBE_GATEWAY_SECRET_<NAME>=value lines (systemd)


def this_platform() -> Platform:
    if sys.platform == "darwin":
        return "macos"
    if sys.platform.startswith("linux"):
        return "linux"
    raise ServiceError(
        f"no service manager support for {sys.platform}; run `mbe-gateway run` under your own "
        "supervisor (or use --platform with --dry-run to see what Linux or macOS would get)"
    )


def spec_for(config: Config) -> ServiceSpec:
    """The spec for this installation and config: absolute paths, because a service manager
    starts the daemon from its own working directory with its own environment."""
    config_path = config.path.expanduser().absolute()
    return ServiceSpec(
        command=daemon_command(),
        config=config_path,
        home=paths.data_dir().absolute(),
        path=service_path(os.environ.get("PATH") or os.defpath),
        drain_seconds=config.gateway.drain_seconds,
        environment_file=config_path.with_name(ENVIRONMENT_FILE),
    )


def service_path(path: str) -> str:
    """This shell's PATH for the unit, each folder once and in its first place (shells that
    source their profile twice repeat entries), relative entries dropped: the service manager
    starts the daemon in another working directory, where they would name other folders."""
    folders = [folder for folder in path.split(os.pathsep) if os.path.isabs(folder)]
    return os.pathsep.join(dict.fromkeys(folders)) or os.defpath


def shell_only_secrets(environment_file: Path | None) -> list[str]:
    """Secrets set by MBE_GATEWAY_SECRET_<NAME> in this shell but not in the service's
    environment file: the service manager starts the daemon without this shell's environment,
    so the daemon would not find them."""
    listed: set[str] = set()
    if environment_file is not None:
        try:
            lines = environment_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            lines = []
        listed = {
            line.split("=", 1)[0].strip().removeprefix("export ").strip() for line in lines if "=" in line
        }
    return sorted(
        name.removeprefix(paths.ENV_SECRET_PREFIX).lower()
        for name, value in os.environ.items()
        if name.startswith(paths.ENV_SECRET_PREFIX) and value and name not in listed
    )


def uid() -> int:
    return os.getuid()


def user_name() -> str:
    """This user's login name, from the password database (USER may be unset under sudo or cron)."""
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid with no entry (some containers): loginctl takes the number too
        return str(os.getuid())


def linger_enabled(user: str) -> bool | None:
    """Whether systemd keeps this user's services running with nobody logged in (`loginctl
    enable-linger`); None when it cannot be told (no loginctl, no logind)."""
    try:
        done = subprocess.run(
            ("loginctl", "show-user", user, "--property=Linger", "--value"),
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    answer = done.stdout.strip()
    if done.returncode != 0 or answer not in ("yes", "no"):
        return None
    return answer == "yes"


def status_command(platform: Platform) -> tuple[str, ...]:
    if platform == "linux":
        return ("systemctl", "--user", "status", "--no-pager", UNIT_NAME)
    return ("launchctl", "print", f"gui/{uid()}/{LABEL}")


def logs_command(platform: Platform, log_dir: Path, *, lines: int, follow: bool) -> tuple[str, ...]:
    """journald keeps a user unit's output on Linux; launchd writes ours to files in the data dir."""
    if platform == "linux":
        argv = ("journalctl", "--user", "--unit", UNIT_NAME, "--lines", str(lines), "--no-pager")
        return (*argv, "--follow") if follow else argv
    files = (str(log_dir / "launchd.err.log"), str(log_dir / "launchd.out.log"))
    return ("tail", "-n", str(lines), *(("-F",) if follow else ()), *files)


def run_attached(argv: tuple[str, ...]) -> int:
    """Run a read-only command on this terminal (status, logs); its exit code. Ctrl-C ends a
    `--follow` quietly."""
    try:
        return subprocess.run(argv, check=False).returncode
    except FileNotFoundError:
        raise ServiceError(f"`{argv[0]}` is not installed here, so this cannot be shown") from None
    except KeyboardInterrupt:
        return 0
