"""The owner's story, in real processes: `init` makes the control tokens, `run` serves the
control plane, `status` asks the running daemon through it, and no token is ever printed.

The keyring is a real keyring backend that calls itself secure and keeps its entries in a
file under tmp. It is written into tmp by the test and loaded only by the subprocesses, so
it never joins keyring's registry of backends in the test process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from fake_llm_servers import serve_fake_llm
from healthz import wait_healthy

SCRIPT = str(Path(sys.executable).with_name("mbe-gateway"))
KEYRING = '''
import json, os
from keyring.backend import KeyringBackend

class SecureFileKeyring(KeyringBackend):
    """A keyring that calls itself secure (priority 1) and keeps entries in $TEST_KEYRING_FILE."""
    priority = 1

    def _entries(self):
        try:
            with open(os.environ["TEST_KEYRING_FILE"]) as f:
                return json.load(f)
        except FileNotFoundError:
            return {}

    def get_password(self, service, username):
        return self._entries().get(f"{service}/{username}")

    def set_password(self, service, username, password):
        entries = self._entries()
        entries[f"{service}/{username}"] = password
        with open(os.environ["TEST_KEYRING_FILE"], "w") as f:
            json.dump(entries, f)

    def delete_password(self, service, username):
        entries = self._entries()
        entries.pop(f"{service}/{username}")
        with open(os.environ["TEST_KEYRING_FILE"], "w") as f:
            json.dump(entries, f)
'''


@pytest.fixture
def env(tmp_path: Path, home: Path) -> dict[str, str]:
    backend = tmp_path / "keyring_backend"
    backend.mkdir()
    (backend / "securefile.py").write_text(KEYRING)
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(backend), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "PYTHON_KEYRING_BACKEND": "securefile.SecureFileKeyring",
        "TEST_KEYRING_FILE": str(tmp_path / "keyring.json"),
        "COLUMNS": "200",
    }


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SCRIPT, *args], env=env, capture_output=True, text=True, timeout=60)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.anyio
async def test_init_makes_tokens_run_serves_them_and_status_asks_the_daemon(
    env: dict[str, str], tmp_path: Path, home: Path
) -> None:
    made = cli(env, "init", "--yes", "--skip-doctor")
    assert made.returncode == 0, made.stderr
    assert "control_admin_token" in made.stdout and "control_read_token" in made.stdout
    tokens = json.loads((tmp_path / "keyring.json").read_text())
    admin, read = tokens["mbe-gateway/control_admin_token"], tokens["mbe-gateway/control_read_token"]
    assert len(admin) == len(read) == 43 and admin != read

    port = free_port()
    config = Path(env["MBE_GATEWAY_CONFIG"])
    down = cli(env, "status")
    assert down.returncode == 1 and "not running" in down.stderr

    async with serve_fake_llm() as llm:
        text = config.read_text().replace("# port = 18789", f"port = {port}")
        provider = f'[[llm.providers]]\nkind = "openai"\nbase_url = "{llm.openai_url}"\nmodel = "m"\n'
        # Discord is on, but its token was never stored: `status` says so (not "none enabled").
        discord = '[channels.discord]\nenabled = true\ntoken = "secret:discord_token"\n'
        text = text.replace("[channels.discord]\n", discord)
        config.write_text(f"{text}\n{provider}")
        command = [sys.executable, "-m", "mbe_gateway", "run"]
        async with await anyio.open_process(command, env=env) as daemon:
            await wait_healthy(port, within=30)

            with anyio.fail_after(30):  # /healthz is ok while the assistant starts
                while True:
                    answer = await anyio.run_process([SCRIPT, "status", "--json"], env=env, check=False)
                    if json.loads(answer.stdout)["components"]["assistant"] == "ready":
                        break
            shown = await anyio.run_process([SCRIPT, "status"], env=env, check=False)
            daemon.send_signal(signal.SIGTERM)
            with anyio.fail_after(20):
                code = await daemon.wait()
            stderr = ""
            if daemon.stderr is not None:
                async for chunk in daemon.stderr:
                    stderr += chunk.decode(errors="replace")

    assert code == 0, stderr
    assert shown.returncode == 0, shown.stderr
    table = shown.stdout.decode()
    assert "engine" in table and "openai m" in table and "queues" in table
    assert "discord   stopped: secret discord_token is not set" in " ".join(table.split("  ")), table
    assert json.loads(answer.stdout)["pid"] == daemon.pid
    log = (home / "logs" / "gateway.log").read_text()
    assert "control plane listening" in log
    for output in (made.stdout, made.stderr, table, answer.stdout.decode(), stderr, log):
        assert admin not in output and read not in output
