"""`mbe-gateway claude-desktop install | uninstall`, run as a user runs them, on a temp HOME.

The file is the user's: these tests hold the command to keeping everything else in it, to a
backup before any change, and to refusing a file it cannot read without touching it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

from mbe_gateway import claude_desktop

SCRIPT = str(Path(sys.executable).with_name("mbe-gateway"))
THEIRS = {
    "globalShortcut": "Ctrl+Space",
    "mcpServers": {
        "filesystem": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem"]}
    },
}


@pytest.fixture
def user_home(tmp_path: Path) -> Path:
    user = tmp_path / "user"
    user.mkdir()
    return user


def cli(user_home: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CONFIG_HOME", "APPDATA")}
    env.update(HOME=str(user_home), COLUMNS="300", **extra)
    return subprocess.run(
        [SCRIPT, "claude-desktop", *args], env=env, capture_output=True, text=True, timeout=60
    )


def linux_file(user_home: Path) -> Path:
    return user_home / ".config" / "Claude" / "claude_desktop_config.json"


def backups(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.bak-*"))


def test_install_adds_our_server_and_keeps_the_users_other_servers_and_keys(
    user_home: Path, home: Path
) -> None:
    path = linux_file(user_home)
    path.parent.mkdir(parents=True)
    original = json.dumps(THEIRS, indent=4)
    path.write_text(original)

    done = cli(user_home, "install", "--platform", "linux")

    assert done.returncode == 0, done.stderr
    assert "Installed mbe-gateway" in done.stdout and "Restart Claude Desktop" in done.stdout
    written = json.loads(path.read_text())
    assert written["globalShortcut"] == "Ctrl+Space"
    assert written["mcpServers"]["filesystem"] == THEIRS["mcpServers"]["filesystem"]
    assert written["mcpServers"]["mbe-gateway"] == {
        "command": SCRIPT,
        "args": ["mcp"],
        "env": {"MBE_GATEWAY_CONFIG": os.environ["MBE_GATEWAY_CONFIG"], "MBE_GATEWAY_HOME": str(home)},
    }
    (backup,) = backups(path)
    assert backup.read_text() == original
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, backup.name])  # no temp left


def test_installing_again_changes_nothing_and_makes_no_second_backup(user_home: Path) -> None:
    path = linux_file(user_home)
    assert cli(user_home, "install", "--platform", "linux").returncode == 0
    first = path.read_bytes()
    again = cli(user_home, "install", "--platform", "linux")
    assert again.returncode == 0 and "nothing changed" in again.stdout
    assert path.read_bytes() == first
    assert backups(path) == []  # the first install created the file: there was nothing to back up


def test_a_file_that_is_not_json_is_refused_and_left_exactly_as_it_was(user_home: Path) -> None:
    path = linux_file(user_home)
    path.parent.mkdir(parents=True)
    broken = '{"mcpServers": {"filesystem": {"command": "npx",}}}\n'
    path.write_text(broken)

    refused = cli(user_home, "install", "--platform", "linux")

    assert refused.returncode == 1
    assert "not valid JSON" in refused.stderr and "line 1" in refused.stderr and "untouched" in refused.stderr
    assert path.read_text() == broken
    assert list(path.parent.iterdir()) == [path]


def test_a_json_file_that_is_not_an_object_is_refused_too(user_home: Path) -> None:
    path = linux_file(user_home)
    path.parent.mkdir(parents=True)
    path.write_text('{"mcpServers": ["filesystem"]}')
    refused = cli(user_home, "install", "--platform", "linux")
    assert refused.returncode == 1 and '"mcpServers" is not an object' in refused.stderr
    assert path.read_text() == '{"mcpServers": ["filesystem"]}'


def test_print_only_prints_the_entry_and_touches_no_file(user_home: Path) -> None:
    printed = cli(user_home, "install", "--print")
    assert printed.returncode == 0, printed.stderr
    entry = json.loads(printed.stdout)["mcpServers"]["mbe-gateway"]
    assert entry["command"] == SCRIPT and entry["args"] == ["mcp"]
    assert list(user_home.iterdir()) == []


def test_each_platform_has_claude_desktops_own_path(user_home: Path, tmp_path: Path) -> None:
    mac = cli(user_home, "install", "--platform", "macos")
    assert mac.returncode == 0, mac.stderr
    assert (user_home / "Library/Application Support/Claude/claude_desktop_config.json").exists()

    appdata = tmp_path / "Roaming"
    windows = cli(user_home, "install", "--platform", "windows", APPDATA=str(appdata))
    assert windows.returncode == 0, windows.stderr
    assert (appdata / "Claude" / "claude_desktop_config.json").exists()
    assert "is Claude Desktop installed?" in windows.stdout  # its folder did not exist

    unknown = cli(user_home, "install", "--platform", "beos")
    assert unknown.returncode == 2 and "macos, windows, linux" in unknown.stderr

    assert claude_desktop.config_path("linux", home=user_home, environ={"XDG_CONFIG_HOME": "/x"}) == Path(
        "/x/Claude/claude_desktop_config.json"
    )


def test_uninstall_removes_only_our_server(user_home: Path) -> None:
    path = linux_file(user_home)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(THEIRS))
    assert cli(user_home, "install", "--platform", "linux").returncode == 0

    removed = cli(user_home, "uninstall", "--platform", "linux")

    assert removed.returncode == 0, removed.stderr
    assert json.loads(path.read_text()) == THEIRS
    assert len(backups(path)) == 2  # one before each change
    again = cli(user_home, "uninstall", "--platform", "linux")
    assert again.returncode == 0 and "nothing changed" in again.stdout


def test_the_entry_leaves_out_what_is_not_set() -> None:
    entry = claude_desktop.server_entry(["/opt/mbe/bin/mbe-gateway"], environ={})
    assert entry == {"command": "/opt/mbe/bin/mbe-gateway", "args": ["mcp"]}
    module = claude_desktop.server_entry(["/usr/bin/python3", "-m", "mbe_gateway"], environ={})
    assert module["args"] == ["-m", "mbe_gateway", "mcp"]


@pytest.mark.anyio
async def test_the_installed_entry_starts_a_working_mcp_server(user_home: Path) -> None:
    """What Claude Desktop would run, run by an MCP client: it answers."""
    assert cli(user_home, "install", "--platform", "linux").returncode == 0
    entry = json.loads(linux_file(user_home).read_text())["mcpServers"]["mbe-gateway"]
    params = StdioServerParameters(command=entry["command"], args=entry["args"], env=entry["env"])
    async with Client(params, read_timeout_seconds=60) as client:
        result = await client.call_tool("gateway_status", {})
    assert not result.is_error, result.content
    assert result.structured_content is not None
    assert result.structured_content["mcp_server"]["data_dir"] == entry["env"]["MBE_GATEWAY_HOME"]
