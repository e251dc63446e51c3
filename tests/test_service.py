"""`mbe-gateway service`: the unit and plist it renders, and what install/uninstall write and run.

The one fake is the OS service manager: `systemctl`, `loginctl` and `launchctl` are small
recording scripts put first on PATH; everything else (the CLI, the files, the paths) is real.
"""

from __future__ import annotations

import os
import plistlib
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from mbe_gateway import services
from mbe_gateway.errors import ServiceError

SCRIPT = str(Path(sys.executable).with_name("mbe-gateway"))
UNIT = ".config/systemd/user/mbe-gateway.service"
PLIST = "Library/LaunchAgents/org.mbe-gateway.plist"


def spec(tmp_path: Path, **changes: object) -> services.ServiceSpec:
    values: dict[str, object] = {
        "command": (SCRIPT, "run"),
        "config": tmp_path / "config.toml",
        "home": tmp_path / "data",
        "path": "/usr/local/bin:/usr/bin:/bin",
        "drain_seconds": 10.0,
        "environment_file": tmp_path / "service.env",
    }
    values.update(changes)
    return services.ServiceSpec(**values)  # type: ignore[arg-type]


def unit_entries(text: str) -> dict[str, list[tuple[str, str]]]:
    """A systemd unit as {section: [(key, value), ...]}: keys may repeat (Environment=)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
            continue
        key, _, value = line.partition("=")
        current.append((key, value))
    return sections


def value(entries: list[tuple[str, str]], key: str) -> str:
    found = [v for k, v in entries if k == key]
    assert len(found) == 1, (key, found)
    return found[0]


# -- the systemd unit ----------------------------------------------------------------------------


def test_the_unit_runs_this_installation_with_its_config_and_data_dir(tmp_path: Path) -> None:
    unit = unit_entries(services.render_systemd(spec(tmp_path)))
    service = unit["Service"]
    assert value(service, "ExecStart") == f"{SCRIPT} run"
    assert [v for k, v in service if k == "Environment"] == [
        f'"MBE_GATEWAY_CONFIG={tmp_path / "config.toml"}"',
        f'"MBE_GATEWAY_HOME={tmp_path / "data"}"',
        '"PATH=/usr/local/bin:/usr/bin:/bin"',
    ]
    assert value(service, "EnvironmentFile") == f"-{tmp_path / 'service.env'}"
    assert value(service, "Restart") == "on-failure" and value(service, "RestartSec") == "10"
    assert value(unit["Unit"], "StartLimitIntervalSec") == "300"
    assert value(unit["Unit"], "StartLimitBurst") == "5"
    assert value(service, "KillSignal") == "SIGTERM" and value(service, "KillMode") == "mixed"
    assert value(service, "NoNewPrivileges") == "yes" and value(service, "UMask") == "0077"
    assert value(unit["Install"], "WantedBy") == "default.target"


def test_the_stop_timeout_outlasts_the_daemons_own_graceful_stop(tmp_path: Path) -> None:
    from mbe_gateway.assistant import DRAIN_WITHIN
    from mbe_gateway.gateway import SEND_GRACE

    for drain in (0.0, 10.0, 120.0):
        unit = unit_entries(services.render_systemd(spec(tmp_path, drain_seconds=drain)))
        timeout = int(value(unit["Service"], "TimeoutStopSec"))
        assert timeout > drain + SEND_GRACE + DRAIN_WITHIN + 4  # + the engine child's stop
        plist = plistlib.loads(services.render_launchd(spec(tmp_path, drain_seconds=drain)).encode())
        assert plist["ExitTimeOut"] == timeout


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_the_rendered_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"  # --user needs a runtime dir; a private one works without a session
    runtime.mkdir(mode=0o700)
    awkward = tmp_path / "my files" / "100% mine"
    unit = tmp_path / "mbe-gateway.service"
    unit.write_text(services.render_systemd(spec(tmp_path, config=awkward / "config.toml", home=awkward)))
    done = subprocess.run(
        ["systemd-analyze", "--user", "verify", str(unit)],
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr  # it warns on stderr, exit 0

    broken = unit.with_name("broken.service")  # the check can fail: a misspelt key is reported
    broken.write_text(unit.read_text().replace("KillMode=", "KilMode="))
    done = subprocess.run(
        ["systemd-analyze", "--user", "verify", str(broken)],
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Unknown key 'KilMode'" in done.stderr


def test_spaces_percent_and_quotes_in_paths_are_escaped_for_systemd(tmp_path: Path) -> None:
    odd = Path('/home/me/My "odd" dir/100%')
    unit = unit_entries(
        services.render_systemd(spec(tmp_path, command=(str(odd / "mbe-gateway"), "run"), home=odd))
    )
    service = unit["Service"]
    assert value(service, "ExecStart") == '"/home/me/My \\"odd\\" dir/100%%/mbe-gateway" run'
    assert '"MBE_GATEWAY_HOME=/home/me/My \\"odd\\" dir/100%%"' in [
        v for k, v in service if k == "Environment"
    ]


def test_a_path_with_a_newline_is_refused_not_mangled(tmp_path: Path) -> None:
    with pytest.raises(ServiceError, match="newline"):
        services.render_systemd(spec(tmp_path, home=Path("/tmp/evil\nExecStartPre=/bin/rm")))
    with pytest.raises(ServiceError, match="newline"):
        services.render_launchd(spec(tmp_path, home=Path("/tmp/evil\n")))


# -- the launchd plist ---------------------------------------------------------------------------


def test_the_plist_parses_and_keeps_the_daemon_alive_after_a_crash_only(tmp_path: Path) -> None:
    home = tmp_path / "Support & <data>"
    plist = plistlib.loads(services.render_launchd(spec(tmp_path, home=home)).encode())
    assert plist["Label"] == "org.mbe-gateway"
    assert plist["ProgramArguments"] == [SCRIPT, "run"]
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["ThrottleInterval"] == 10
    assert plist["Umask"] == 0o077
    assert plist["EnvironmentVariables"] == {
        "MBE_GATEWAY_CONFIG": str(tmp_path / "config.toml"),
        "MBE_GATEWAY_HOME": str(home),
        "PATH": "/usr/local/bin:/usr/bin:/bin",
    }
    assert plist["StandardOutPath"] == str(home / "logs" / "launchd.out.log")
    assert plist["StandardErrorPath"] == str(home / "logs" / "launchd.err.log")


def test_the_daemon_command_is_the_script_of_the_running_installation() -> None:
    assert services.daemon_command() == (SCRIPT, "run")
    assert Path(SCRIPT).is_absolute()


def test_the_unit_goes_where_systemd_looks_for_user_units(tmp_path: Path) -> None:
    assert services.service_file("linux", tmp_path, {}) == tmp_path / UNIT
    assert services.service_file("linux", tmp_path, {"XDG_CONFIG_HOME": "/x/cfg"}) == Path(
        "/x/cfg/systemd/user/mbe-gateway.service"
    )
    assert services.service_file("macos", tmp_path, {"XDG_CONFIG_HOME": "/x"}) == tmp_path / PLIST


# -- the commands, through the real CLI ----------------------------------------------------------


@pytest.fixture
def user(tmp_path: Path, home: Path) -> Path:
    """A user's home directory for the subprocess (HOME), empty."""
    path = tmp_path / "user"
    path.mkdir()
    return path


@pytest.fixture
def manager(tmp_path: Path) -> Path:
    """A bin dir of recording service-manager scripts; each call is one line in calls.log.
    FAIL_WITH=text makes systemctl fail with that message; LINGER sets loginctl's answer."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    for name in ("systemctl", "launchctl", "loginctl", "journalctl"):
        script = bin_dir / name
        script.write_text(
            "#!/bin/sh\n"
            f'echo "{name} $*" >> "{log}"\n'
            f'if [ "{name}" = loginctl ]; then echo "${{LINGER:-no}}"; fi\n'
            f'if [ "{name}" = systemctl ] && [ -n "$FAIL_WITH" ]; then echo "$FAIL_WITH" >&2; exit 1; fi\n'
        )
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return bin_dir


Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(user: Path, manager: Path) -> Run:
    env = {**os.environ, "HOME": str(user), "PATH": f"{manager}:{os.environ['PATH']}", "COLUMNS": "200"}
    env.pop("XDG_CONFIG_HOME", None)

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SCRIPT, *args], env={**env, **extra}, capture_output=True, text=True, timeout=90
        )

    return run


def calls(manager: Path, program: str = "") -> list[str]:
    """The service-manager commands run so far (only `program`'s, when given)."""
    log = manager.parent / "calls.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [line for line in lines if line.startswith(program)]


def every_file(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_install_dry_run_on_linux_prints_the_unit_and_commands_and_changes_nothing(
    cli: Run, user: Path, manager: Path, home: Path
) -> None:
    done = cli("service", "install", "--dry-run", "--platform", "linux")
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    unit = user / UNIT
    assert f"mkdir -p {unit.parent}" in out
    assert any(line.startswith(f"write {unit} (") for line in out)
    assert f"ExecStart={SCRIPT} run" in out and f'Environment="MBE_GATEWAY_HOME={home}"' in out
    commands = [line for line in out if line.startswith("systemctl")]
    assert commands == ["systemctl --user daemon-reload", "systemctl --user enable --now mbe-gateway.service"]
    assert "loginctl enable-linger" in done.stdout  # the fake says linger is off
    assert every_file(user) == [] and list(home.iterdir()) == []
    assert calls(manager) == [f"loginctl show-user {services.user_name()} --property=Linger --value"]


def test_install_dry_run_for_macos_prints_the_plist_and_launchctl_commands(
    cli: Run, user: Path, manager: Path, home: Path
) -> None:
    done = cli("service", "install", "--dry-run", "--platform", "macos")
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    plist = user / PLIST
    assert f"mkdir -p {home / 'logs'}" in out and any(line.startswith(f"write {plist} (") for line in out)
    assert "  <string>org.mbe-gateway</string>" in out
    uid = os.getuid()
    assert [line for line in out if line.startswith("launchctl")] == [
        f"launchctl enable gui/{uid}/org.mbe-gateway",
        f"launchctl bootstrap gui/{uid} {plist}",
    ]
    assert "linger" not in done.stdout
    assert every_file(user) == [] and list(home.iterdir()) == [] and calls(manager) == []


def test_install_enables_and_starts_the_unit_and_uninstall_removes_it(
    cli: Run, user: Path, manager: Path, tmp_path: Path
) -> None:
    (tmp_path / "config.toml").write_text("[gateway]\ndrain_seconds = 60\n")
    done = cli("service", "install", "--platform", "linux", LINGER="yes")
    assert done.returncode == 0, done.stderr
    unit = user / UNIT
    assert every_file(user) == [unit]
    assert "TimeoutStopSec=81\n" in unit.read_text()  # 60 s drain from the config, and the rest
    assert f"Installed {unit}" in done.stdout and "Linger is on" in done.stdout
    assert calls(manager, "systemctl") == [
        "systemctl --user daemon-reload",
        "systemctl --user enable --now mbe-gateway.service",
    ]

    again = cli("service", "install", "--platform", "linux")  # a re-install restarts on the new unit
    assert again.returncode == 0, again.stderr
    assert calls(manager, "systemctl")[-1] == "systemctl --user restart mbe-gateway.service"

    status = cli("service", "status", "--platform", "linux")
    assert status.returncode == 0, status.stderr
    assert calls(manager, "systemctl")[-1] == "systemctl --user status --no-pager mbe-gateway.service"

    dry = cli("service", "uninstall", "--dry-run", "--platform", "linux")
    assert dry.stdout.splitlines() == [
        "systemctl --user disable --now mbe-gateway.service",
        f"rm {unit}",
        "systemctl --user daemon-reload",
    ]
    assert unit.exists()

    before = len(calls(manager, "systemctl"))
    gone = cli("service", "uninstall", "--platform", "linux")
    assert gone.returncode == 0, gone.stderr
    assert calls(manager, "systemctl")[before:] == [
        "systemctl --user disable --now mbe-gateway.service",
        "systemctl --user daemon-reload",
    ]
    assert every_file(user) == []
    nothing = cli("service", "uninstall", "--platform", "linux")
    assert nothing.returncode == 0 and "Not installed" in nothing.stdout
    assert cli("service", "status", "--platform", "linux").returncode == 3


def test_install_on_macos_bootstraps_the_agent_and_uninstall_boots_it_out(
    cli: Run, user: Path, manager: Path, home: Path
) -> None:
    uid = os.getuid()
    assert cli("service", "install", "--platform", "macos").returncode == 0
    plist = user / PLIST
    assert plistlib.loads(plist.read_bytes())["ProgramArguments"] == [SCRIPT, "run"]
    assert (home / "logs").is_dir()
    assert calls(manager) == [
        f"launchctl enable gui/{uid}/org.mbe-gateway",
        f"launchctl bootstrap gui/{uid} {plist}",
    ]
    assert cli("service", "install", "--platform", "macos").returncode == 0
    assert calls(manager)[2] == f"launchctl bootout gui/{uid}/org.mbe-gateway"  # the old copy first
    assert cli("service", "uninstall", "--platform", "macos").returncode == 0
    assert calls(manager)[-1] == f"launchctl bootout gui/{uid}/org.mbe-gateway"
    assert not plist.exists()


def test_a_missing_user_session_is_one_red_line_saying_what_to_do(cli: Run, user: Path) -> None:
    done = cli(
        "service", "install", "--platform", "linux", FAIL_WITH="Failed to connect to bus: No medium found"
    )
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert "systemctl --user daemon-reload` failed (exit 1): Failed to connect to bus" in done.stderr
    assert "XDG_RUNTIME_DIR" in done.stderr


def test_logs_read_the_journal_on_linux_and_the_log_files_on_macos(
    cli: Run, manager: Path, home: Path
) -> None:
    assert cli("service", "logs", "--platform", "linux", "-n", "20", "--follow").returncode == 0
    assert calls(manager)[-1] == "journalctl --user --unit mbe-gateway.service --lines 20 --no-pager --follow"
    logs = home / "logs"
    logs.mkdir()
    (logs / "launchd.err.log").write_text("first\nlast error\n")
    (logs / "launchd.out.log").write_text("out line\n")
    done = cli("service", "logs", "--platform", "macos", "-n", "1")
    assert done.returncode == 0 and "last error" in done.stdout and "first" not in done.stdout


def test_a_bad_platform_name_is_a_usage_error(cli: Run, user: Path) -> None:
    done = cli("service", "install", "--dry-run", "--platform", "windows")
    assert done.returncode == 2 and "expected linux or macos" in done.stderr


def test_install_warns_about_secrets_only_this_shells_environment_holds(cli: Run, tmp_path: Path) -> None:
    (tmp_path / "service.env").write_text("MBE_GATEWAY_SECRET_SLACK_BOT_TOKEN=xoxb-1\n")
    done = cli(
        "service",
        "install",
        "--dry-run",
        "--platform",
        "linux",
        MBE_GATEWAY_SECRET_TELEGRAM_TOKEN="8123:abc",
        MBE_GATEWAY_SECRET_SLACK_BOT_TOKEN="xoxb-1",
    )
    assert done.returncode == 0, done.stderr
    warning = next(line for line in done.stdout.splitlines() if line.startswith("Warning:"))
    assert "telegram_token" in warning and "slack_bot_token" not in warning  # that one is in service.env
    assert str(tmp_path / "service.env") in warning and "8123:abc" not in done.stdout


def test_the_service_path_keeps_each_folder_once_and_drops_relative_ones() -> None:
    shell = os.pathsep.join(["/root/.cargo/bin", "/root/.cargo/bin", "bin", "/usr/bin", ".", "/usr/bin"])
    assert services.system.service_path(shell) == os.pathsep.join(["/root/.cargo/bin", "/usr/bin"])
    assert services.system.service_path("relative:only") == os.defpath
