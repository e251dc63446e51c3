"""The owner lists, approves, denies and revokes from the command line, with no daemon running:
straight in the store (tests/test_owner_cli.py has the same through a running daemon)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from mbe_gateway.store import open_database, outbox, pairing


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mbe_gateway", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )


async def ask(home: Path, sender: str) -> str:
    async with await open_database(home / "gateway.sqlite3") as db:
        request = await pairing.request(
            db, channel="telegram", sender_id=sender, chat_id=sender, sender_name="Ann"
        )
        assert request is not None
        return request.code


@pytest.mark.anyio
async def test_the_owner_approves_a_code_and_the_sender_is_told(home: Path) -> None:
    code = await ask(home, "4242")
    listed = await anyio.to_thread.run_sync(cli, "pairing", "list")
    assert code in listed.stdout
    assert "4242" in listed.stdout
    approved = await anyio.to_thread.run_sync(cli, "pairing", "approve", code.lower())
    assert approved.returncode == 0, approved.stderr
    assert "Approved Ann on telegram." in approved.stdout
    assert "No daemon answered: done in its database; they are told when it starts." in approved.stdout
    async with await open_database(home / "gateway.sqlite3") as db:
        assert await pairing.is_allowed(db, "telegram", "4242")
        (message,) = await outbox.due(db)
        assert message.chat_id == "4242"
        assert "approved" in message.text
    again = await anyio.to_thread.run_sync(cli, "pairing", "approve", code)
    assert again.returncode == 1
    assert f"no pending request has the code {code}" in again.stderr
    assert "Traceback" not in again.stderr
    revoked = await anyio.to_thread.run_sync(cli, "pairing", "revoke", "telegram", "4242")
    assert revoked.returncode == 0
    not_there = await anyio.to_thread.run_sync(cli, "pairing", "revoke", "telegram", "4242")
    assert not_there.returncode == 1


@pytest.mark.anyio
async def test_the_owner_denies_a_code(home: Path) -> None:
    code = await ask(home, "777")
    denied = await anyio.to_thread.run_sync(cli, "pairing", "deny", code)
    assert denied.returncode == 0
    assert "Denied Ann on telegram." in denied.stdout
    assert "No pending pairing requests." in (await anyio.to_thread.run_sync(cli, "pairing", "list")).stdout
    bad = await anyio.to_thread.run_sync(cli, "pairing", "approve", "not-a-code!")
    assert bad.returncode == 1
    assert "is not a pairing code" in bad.stderr
