"""What the owner's commands do through the running daemon: send, sessions, pairing.

The CLI parses and prints; these talk to the daemon over the control protocol (client.py),
with the least powerful token that may do the job. `send` and `sessions` need the daemon
(DaemonNotRunning says to start it). Pairing has a second path: when no daemon answers, the
store is changed directly, as before the control plane existed, and the answer says so
(`live` is False), because then an approved sender is told only when the daemon next starts.
Through the daemon, the sender is told at once and every client hears a "pairing" event.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from mbe_gateway.config import Config
from mbe_gateway.control.auth import Scope, client_token
from mbe_gateway.control.client import connect
from mbe_gateway.errors import ControlError, DaemonNotRunning, PairingError, SecretError

if TYPE_CHECKING:
    from mbe_gateway.secrets import Secrets
    from mbe_gateway.store import Database
    from mbe_gateway.store.pairing import PairingRequest

Direct = Callable[["Database"], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Answer:
    payload: dict[str, Any]
    live: bool  # True: the running daemon did it; False: done in the store, no daemon running


async def call(
    config: Config, secrets: Secrets, scope: Scope, method: str, params: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """`method`'s answer from the running daemon; DaemonNotRunning when nothing answers."""
    async with connect(config.control, client_token(secrets, scope)) as client:
        return await client.call(method, params)


async def send(config: Config, secrets: Secrets, channel: str, chat_id: str, text: str) -> dict[str, Any]:
    """Queue `text` to a chat on a running channel (the daemon's delivery worker sends it)."""
    return await call(
        config, secrets, "admin", "send", {"channel": channel, "chat_id": chat_id, "text": text}
    )


async def sessions(
    config: Config, secrets: Secrets, *, limit: int, channel: str | None
) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"limit": limit} | ({"channel": channel} if channel else {})
    found: list[dict[str, Any]] = (await call(config, secrets, "read", "sessions.list", params))["sessions"]
    return found


async def history(config: Config, secrets: Secrets, key: str, *, limit: int) -> dict[str, Any]:
    """One conversation by its id (as `sessions` lists them) or by CHANNEL:CHAT_ID."""
    async with connect(config.control, client_token(secrets, "read")) as client:
        if key.isdigit():
            session_id = int(key)
        else:
            channel, colon, chat_id = key.partition(":")
            if not colon or not channel or not chat_id:
                raise ControlError(
                    f"{key!r} is not a session: give its id or CHANNEL:CHAT_ID "
                    "(`mbe-gateway sessions` lists them)",
                    code="invalid_params",
                )
            listed = await client.call("sessions.list", {"channel": channel, "limit": 500})
            match = [s for s in listed["sessions"] if s["chat_id"] == chat_id]
            if not match:
                raise ControlError(
                    f"no session for {channel}:{chat_id}; `mbe-gateway sessions` lists them", code="not_found"
                )
            session_id = int(match[0]["id"])
        return await client.call("sessions.history", {"session_id": session_id, "limit": limit})


async def pairing_list(config: Config, secrets: Secrets) -> Answer:
    from mbe_gateway.store import pairing

    async def direct(db: Database) -> dict[str, Any]:
        return {
            "pending": [asdict(r) for r in await pairing.pending(db)],
            "approved": [asdict(a) for a in await pairing.allowed(db)],
        }

    return await _pairing(config, secrets, "read", "pairing.list", {}, direct)


async def pairing_approve(config: Config, secrets: Secrets, code: str) -> Answer:
    from mbe_gateway import access

    async def direct(db: Database) -> dict[str, Any]:
        return _sender(await access.approve(db, code, config.gateway.language))

    return await _pairing(config, secrets, "admin", "pairing.approve", {"code": code}, direct)


async def pairing_deny(config: Config, secrets: Secrets, code: str) -> Answer:
    from mbe_gateway.store import pairing

    async def direct(db: Database) -> dict[str, Any]:
        return _sender(await pairing.deny(db, code))

    return await _pairing(config, secrets, "admin", "pairing.deny", {"code": code}, direct)


async def pairing_revoke(config: Config, secrets: Secrets, channel: str, sender_id: str) -> Answer:
    from mbe_gateway.store import pairing

    async def direct(db: Database) -> dict[str, Any]:
        approved = {(a.channel, a.sender_id): a for a in await pairing.allowed(db)}
        sender = approved.get((channel, sender_id))
        if sender is None or not await pairing.revoke(db, channel, sender_id):
            raise PairingError(f"{channel}:{sender_id} is not approved; `pairing list` shows who is")
        return {"channel": channel, "sender_id": sender_id, "sender_name": sender.sender_name}

    params = {"channel": channel, "sender_id": sender_id}
    return await _pairing(config, secrets, "admin", "pairing.revoke", params, direct)


async def _pairing(
    config: Config, secrets: Secrets, scope: Scope, method: str, params: Mapping[str, Any], direct: Direct
) -> Answer:
    """Through the daemon when it answers; else straight in the store."""
    try:
        return Answer(await call(config, secrets, scope, method, params), live=True)
    except DaemonNotRunning:
        pass
    except SecretError:  # no control token here, so no control plane to ask
        pass
    from mbe_gateway.store import open_database

    async with await open_database() as db:
        return Answer(await direct(db), live=False)


def _sender(request: PairingRequest) -> dict[str, Any]:
    return {"channel": request.channel, "sender_id": request.sender_id, "sender_name": request.sender_name}
