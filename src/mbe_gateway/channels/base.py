"""The one small interface every chat platform implements.

A channel only moves text between a platform and the gateway: it hands each inbound message
to `deliver` and acknowledges it to the platform only after `deliver` returns (by then the
gateway has written it to the inbox, so nothing acknowledged can be lost), and it sends the
replies it is given. It never calls MBE or an LLM, and it never decides who may talk to the
assistant: that is the gateway's job, on the normalized message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, Protocol

import anyio

Markup = Literal["telegram_html", "discord_markdown", "slack_mrkdwn", "plain"]


@dataclass(frozen=True, slots=True)
class Inbound:
    """One message a person sent, as every platform's messages look once normalized.

    `platform_message_id` is unique within the channel and stable across redeliveries (it is
    what makes a redelivered message recognisable). `addressed` is True in a DM, and in a
    group when the bot was mentioned, replied to, or given a command.
    """

    channel: str
    platform_message_id: str
    chat_id: str
    sender_id: str
    text: str
    sent_at: float  # Unix time, as the platform reports it
    sender_name: str | None = None
    is_group: bool = False
    addressed: bool = True
    reply_to: str | None = None  # the platform id to thread the answer to (usually this message)
    meta: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class Outbound:
    """One reply (or proactive message) to send. `text` is common Markdown; each channel
    converts it to its platform's flavour and splits it under the platform's length limit."""

    chat_id: str
    text: str
    reply_to: str | None = None
    meta: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class Capabilities:
    max_length: int  # characters per message, after markup conversion
    markup: Markup
    can_edit: bool = False
    typing: bool = True


Deliver = Callable[[Inbound], Awaitable[None]]


class Channel(Protocol):
    """A platform connection. The gateway runs `run` under its supervisor, which restarts it
    with backoff if it raises (except ChannelAuthFailed, which it reports and leaves stopped)."""

    name: str
    capabilities: Capabilities
    receiving: anyio.Event  # set once `run` is connected and receiving (the daemon waits for it
    # before loading its heavier parts, so that a cold start reaches the platform first)

    async def run(self, deliver: Deliver) -> None:
        """Connect, then receive until cancelled: each message goes to `deliver`, and is
        acknowledged to the platform only after `deliver` returned."""
        ...

    async def send(self, message: Outbound) -> list[str]:
        """Send one reply, split into parts as needed, in order; the platform ids of the parts.
        Raises SendFailed (retryable or not) or ChannelAuthFailed."""
        ...

    async def typing(self, chat_id: str) -> None:
        """Show "typing…" in the chat for a few seconds (best effort: never raises)."""
        ...

    async def check(self) -> str:
        """Verify the credentials with one cheap call; a short description such as "@my_bot".
        Raises ChannelAuthFailed when the platform rejects the token, ChannelError otherwise."""
        ...
