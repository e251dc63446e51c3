"""Who may reach the assistant, decided on each normalized message before anything else.

A message that is not allowed never reaches MBE, the LLM or the memory: the gateway keeps
only what it needs to recognise a redelivery, and answers (if at all) with a fixed text.

- In a DM: dm_policy "open" lets anyone in; "allowlist" only `allow_from` and the senders the
  owner approved; "pairing" (the default) also gives a stranger a code to pass to the owner,
  once, and nothing else: writing again gets no answer until the code expires (an hour), so a
  stranger cannot make the bot answer every message they send.
- In a group: only groups in `allow_groups` ("*" for any), and only messages addressed to the
  bot (a mention, a reply to it, a command); anyone in an allowed group may ask.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from mbe_gateway.channels.base import Inbound
from mbe_gateway.config import DMPolicy
from mbe_gateway.store import Database, outbox, pairing
from mbe_gateway.texts import Language, say


@dataclass(frozen=True, slots=True)
class Policy:
    dm_policy: DMPolicy = "pairing"
    allow_from: tuple[str, ...] = ()
    allow_groups: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    reason: str  # why, as a short stable code: it labels a metric and a log line
    reply: str | None = None  # the fixed answer to a refused sender, if any


async def decide(
    db: Database, policy: Policy, message: Inbound, language: Language, *, now: float | None = None
) -> Verdict:
    if message.is_group:
        if not message.addressed:
            return Verdict(False, "group_not_addressed")
        if "*" in policy.allow_groups or message.chat_id in policy.allow_groups:
            return Verdict(True, "group_allowed")
        return Verdict(False, "group_not_allowed")
    if policy.dm_policy == "open":
        return Verdict(True, "dm_open")
    if message.sender_id in policy.allow_from:
        return Verdict(True, "allow_from")
    if await pairing.is_allowed(db, message.channel, message.sender_id):
        return Verdict(True, "paired")
    if policy.dm_policy == "allowlist":
        return Verdict(False, "not_allowlisted")
    request = await pairing.request(
        db,
        channel=message.channel,
        sender_id=message.sender_id,
        chat_id=message.chat_id,
        sender_name=message.sender_name,
        now=time.time() if now is None else now,
    )
    if request is None:  # silent: an answer here would answer every message a flood sends
        return Verdict(False, "pairing_full")
    if not request.is_new:
        return Verdict(False, "pairing_pending")
    return Verdict(False, "pairing_code_sent", say(language, "pairing_code", code=request.code))


async def approve(db: Database, code: str, language: Language) -> pairing.PairingRequest:
    """The owner's yes: the sender may talk to the assistant, and is told so in their chat
    (the running daemon sends it; a stopped one sends it when it starts)."""
    request = await pairing.approve(db, code)
    await outbox.enqueue(
        db, channel=request.channel, chat_id=request.chat_id, text=say(language, "pairing_approved")
    )
    return request
