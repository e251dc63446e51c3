"""The owner's commands against a running daemon, in real processes: `send`, `sessions`,
`sessions show` and `pairing` through the control plane, with Telegram played by its fake.

One daemon is shared by the module (each start spawns the engine and a Python process); the
control tokens come from MBE_GATEWAY_SECRET_* variables, which the commands inherit too.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from fake_llm_servers import serve_fake_llm
from fakes.telegram import ALICE, BOB, FakeTelegram, User, serve_fake_telegram
from healthz import wait_healthy
from test_control_cli import SCRIPT, free_port

ADMIN = "owner-admin-token-" + "a" * 32
READ = "owner-read-token-" + "r" * 32
CAROL = User(1003, "Carol", "carol")


@dataclass
class Daemon:
    env: dict[str, str]
    telegram: FakeTelegram
    home: Path

    async def cli(self, *args: str, **extra: str) -> tuple[int, str, str]:
        """Run `mbe-gateway ARGS` (without blocking the fakes in this process): code, out, err."""
        done = await anyio.run_process([SCRIPT, *args], env={**self.env, **extra}, check=False)
        return done.returncode, done.stdout.decode(), done.stderr.decode()


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def daemon(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Daemon]:
    root = tmp_path_factory.mktemp("owner-cli")
    home = root / "home"
    home.mkdir()
    port = free_port()
    async with serve_fake_telegram() as telegram, serve_fake_llm() as llm:
        config = root / "config.toml"
        config.write_text(
            f"[control]\nport = {port}\n"
            f'[[llm.providers]]\nkind = "openai"\nbase_url = "{llm.openai_url}"\nmodel = "m"\n'
            "[channels.telegram]\n"
            f'enabled = true\ntoken = "secret:telegram_token"\napi_base = "{telegram.api_base}"\n'
            f'allow_from = ["{ALICE.id}"]\n'
        )
        env = {
            **os.environ,
            "MBE_GATEWAY_HOME": str(home),
            "MBE_GATEWAY_CONFIG": str(config),
            "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
            "MBE_GATEWAY_SECRET_TELEGRAM_TOKEN": telegram.token,
            "MBE_GATEWAY_SECRET_CONTROL_ADMIN_TOKEN": ADMIN,
            "MBE_GATEWAY_SECRET_CONTROL_READ_TOKEN": READ,
            "COLUMNS": "200",
        }
        command = [sys.executable, "-m", "mbe_gateway", "run"]
        async with await anyio.open_process(command, env=env) as process:
            await telegram.wait_polling(timeout=60)
            await wait_healthy(port, within=60)
            yield Daemon(env, telegram, home)
            process.send_signal(signal.SIGTERM)
            with anyio.fail_after(30):
                assert await process.wait() == 0


@pytest.mark.anyio
async def test_the_owner_lists_conversations_reads_one_and_writes_into_it(daemon: Daemon) -> None:
    telegram = daemon.telegram
    before = len(telegram.sent)
    telegram.dm("What should I cook tonight?", user=ALICE)
    await telegram.wait_sent(before + 1, timeout=30)

    code, out, err = await daemon.cli("sessions")
    assert code == 0, err
    assert "telegram" in out and str(ALICE.id) in out
    code, listed, err = await daemon.cli("sessions", "list", "--limit", "5", "--channel", "telegram")
    assert code == 0, err
    assert str(ALICE.id) in listed

    code, shown, err = await daemon.cli("sessions", "show", f"telegram:{ALICE.id}")
    assert code == 0, err
    assert "What should I cook tonight?" in shown and "Hello from the fake model." in shown
    assert shown.index("What should I cook tonight?") < shown.index("Hello from the fake model.")
    session_id = shown.split()[1].rstrip(":")
    code, by_id, err = await daemon.cli("sessions", "show", session_id, "--limit", "1")
    assert code == 0, err
    assert "Hello from the fake model." in by_id and "What should I cook tonight?" not in by_id

    code, out, err = await daemon.cli("send", "telegram", str(ALICE.id), "Dinner is at eight.")
    assert code == 0, err
    assert f"Queued for telegram:{ALICE.id}" in out
    sent = (await telegram.wait_sent(before + 2, timeout=30))[-1]
    assert (sent.chat_id, sent.text) == (ALICE.id, "Dinner is at eight.")

    for args, expected in (
        (("sessions", "show", "999999"), "no session 999999"),
        (("sessions", "show", "telegram:424242"), "no session for telegram:424242"),
        (("sessions", "show", "nonsense"), "is not a session"),
        (("send", "carrier-pigeon", "1", "hi"), "the carrier-pigeon channel is not running"),
    ):
        code, out, err = await daemon.cli(*args)
        assert code == 1, args
        assert expected in err and "Traceback" not in err, err


@pytest.mark.anyio
async def test_pairing_goes_through_the_daemon_so_the_sender_is_told_at_once(daemon: Daemon) -> None:
    telegram = daemon.telegram
    before = len(telegram.sent)
    telegram.dm("hello, can we talk?", user=BOB)
    telegram.dm("me too, please", user=CAROL)
    await telegram.wait_sent(before + 2, timeout=30)  # each got a pairing code

    code, listed, err = await daemon.cli("pairing", "list")
    assert code == 0, err
    codes = {}
    for line in listed.splitlines():
        words = line.split()
        if len(words) >= 3 and words[2] in (str(BOB.id), str(CAROL.id)):
            codes[int(words[2])] = words[0]
    assert set(codes) == {BOB.id, CAROL.id}, listed

    code, out, err = await daemon.cli("pairing", "approve", codes[BOB.id])
    assert code == 0, err
    assert "Approved Bob on telegram." in out and "No daemon answered" not in out
    # Told at once: the daemon nudges its delivery worker; no restart, no polling interval.
    notice = (await telegram.wait_sent(before + 3, timeout=10))[-1]
    assert notice.chat_id == BOB.id and "approved" in notice.text

    code, out, err = await daemon.cli("pairing", "deny", codes[CAROL.id])
    assert code == 0 and "Denied Carol on telegram." in out, err
    code, listed, err = await daemon.cli("pairing", "list")
    assert "No pending pairing requests." in listed and f"telegram:{BOB.id} (Bob)" in listed

    code, out, err = await daemon.cli("pairing", "revoke", "telegram", str(BOB.id))
    assert code == 0 and "Revoked Bob on telegram." in out, err
    code, out, err = await daemon.cli("pairing", "revoke", "telegram", str(BOB.id))
    assert code == 1 and "is not approved" in err
    code, out, err = await daemon.cli("pairing", "approve", codes[CAROL.id])
    assert code == 1 and f"no pending request has the code {codes[CAROL.id]}" in err


@pytest.mark.anyio
async def test_a_read_only_token_cannot_send_and_a_stopped_daemon_is_named(
    daemon: Daemon, tmp_path: Path
) -> None:
    code, _, err = await daemon.cli(
        "send", "telegram", str(ALICE.id), "hi", MBE_GATEWAY_SECRET_CONTROL_ADMIN_TOKEN=READ
    )
    assert code == 1 and "needs the admin token" in err

    config = tmp_path / "elsewhere.toml"
    config.write_text(f"[control]\nport = {free_port()}\n")
    for args in (("send", "telegram", "1", "hi"), ("sessions",), ("sessions", "show", "1")):
        code, _, err = await daemon.cli(*args, MBE_GATEWAY_CONFIG=str(config))
        assert code == 1, args
        assert "the daemon is not running" in err and "mbe-gateway run" in err
