"""Strangers get a pairing code and nothing else; the owner decides who talks to the assistant."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mbe_gateway.access import Policy, decide
from mbe_gateway.channels.base import Inbound
from mbe_gateway.errors import PairingError
from mbe_gateway.store import Database, open_database, pairing


@pytest.fixture
async def db(home: Path) -> AsyncIterator[Database]:
    async with await open_database(home / "gateway.sqlite3") as database:
        yield database


def dm(sender: str, text: str = "hello", channel: str = "telegram") -> Inbound:
    return Inbound(channel, f"{sender}:1", sender, sender, text, 0.0, sender_name=sender.title())


def group(sender: str, chat: str, *, addressed: bool = True) -> Inbound:
    return Inbound("telegram", f"{chat}:1", chat, sender, "@bot hi", 0.0, is_group=True, addressed=addressed)


def code_in(text: str | None) -> str:
    assert text is not None
    found = re.search(r"(?:Your pairing code: |你的配对码:)([A-Z0-9]{8})", text)
    assert found, text
    return found[1]


@pytest.mark.anyio
async def test_a_stranger_gets_a_code_and_the_owner_approves_it(db: Database) -> None:
    verdict = await decide(db, Policy(), dm("mallory"), "en")
    assert not verdict.allowed
    code = code_in(verdict.reply)
    assert set(code) <= set(pairing.ALPHABET)
    assert f"mbe-gateway pairing approve {code}" in (verdict.reply or "")
    again = await decide(db, Policy(), dm("mallory", "hello??"), "en")
    assert not again.allowed
    assert again.reply is None  # the code once; writing again gets nothing
    (waiting,) = await pairing.pending(db)
    assert waiting.code == code
    approved = await pairing.approve(db, code.lower()[:4] + "-" + code.lower()[4:])
    assert approved.sender_id == "mallory"
    assert (await decide(db, Policy(), dm("mallory"), "en")).allowed
    assert await pairing.pending(db) == []


@pytest.mark.anyio
async def test_at_most_three_codes_wait_per_channel_and_they_expire_after_an_hour(db: Database) -> None:
    for name in ("a", "b", "c"):
        assert code_in((await decide(db, Policy(), dm(name), "en", now=1000.0)).reply)
    full = await decide(db, Policy(), dm("d"), "en", now=1000.0)
    assert not full.allowed
    assert full.reply is None  # silent: a flood of strangers gets nothing to bounce off
    other_channel = await decide(db, Policy(), dm("d", channel="discord"), "en", now=1000.0)
    assert code_in(other_channel.reply)
    later = await decide(db, Policy(), dm("d"), "en", now=1000.0 + pairing.EXPIRES_AFTER + 1)
    assert code_in(later.reply)


@pytest.mark.anyio
async def test_an_expired_or_unknown_code_is_refused_clearly(db: Database) -> None:
    request = await pairing.request(db, channel="telegram", sender_id="eve", chat_id="eve", now=1000.0)
    assert request is not None
    with pytest.raises(PairingError, match="expired"):
        await pairing.approve(db, request.code, now=1000.0 + pairing.EXPIRES_AFTER + 1)
    with pytest.raises(PairingError, match="no pending request"):
        await pairing.approve(db, "ABCDEFGH")
    with pytest.raises(PairingError, match="not a pairing code"):
        await pairing.approve(db, "0O1I")
    assert not await pairing.is_allowed(db, "telegram", "eve")


@pytest.mark.anyio
async def test_a_denied_sender_stays_out(db: Database) -> None:
    code = code_in((await decide(db, Policy(), dm("trudy"), "en")).reply)
    denied = await pairing.deny(db, code)
    assert denied.sender_id == "trudy"
    assert not await pairing.is_allowed(db, "telegram", "trudy")
    with pytest.raises(PairingError):
        await pairing.approve(db, code)


@pytest.mark.anyio
async def test_allowlist_lets_in_only_listed_senders_and_says_nothing_to_others(db: Database) -> None:
    policy = Policy(dm_policy="allowlist", allow_from=("alice",))
    assert (await decide(db, policy, dm("alice"), "en")).allowed
    refused = await decide(db, policy, dm("bob"), "en")
    assert not refused.allowed
    assert refused.reply is None
    assert await pairing.pending(db) == []


@pytest.mark.anyio
async def test_open_policy_lets_anyone_in(db: Database) -> None:
    assert (await decide(db, Policy(dm_policy="open"), dm("anyone"), "en")).allowed


@pytest.mark.anyio
async def test_groups_need_their_own_allowlist_and_a_mention(db: Database) -> None:
    policy = Policy(allow_groups=("-100",))
    assert (await decide(db, policy, group("bob", "-100"), "en")).allowed
    assert not (await decide(db, policy, group("bob", "-100", addressed=False), "en")).allowed
    other = await decide(db, policy, group("bob", "-200"), "en")
    assert not other.allowed
    assert other.reply is None
    assert (await decide(db, Policy(allow_groups=("*",)), group("bob", "-200"), "en")).allowed


@pytest.mark.anyio
async def test_a_revoked_sender_must_pair_again(db: Database) -> None:
    code = code_in((await decide(db, Policy(), dm("oscar"), "zh")).reply)
    await pairing.approve(db, code)
    assert await pairing.revoke(db, "telegram", "oscar")
    assert not await pairing.revoke(db, "telegram", "oscar")
    assert not (await decide(db, Policy(), dm("oscar"), "en")).allowed
