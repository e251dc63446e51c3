"""The control plane's two tokens and what each may do.

- `control_admin_token`: everything, including what changes state or costs money (chatting
  with the assistant, sending a message, approving a pairing request).
- `control_read_token`: every read (health, status, sessions and their history, pairing
  requests, metrics), nothing that changes anything. Give this one to a dashboard.

Both are secrets like any other (the keyring, MBE_GATEWAY_SECRET_<NAME>, or the opt-in file),
made with `secrets.token_urlsafe(32)` (256 random bits) by `mbe-gateway init`, or by the first
`run` when missing. A presented token is compared with both, in constant time, as bytes. Token
values never leave this module except to the caller that asked for them: `Tokens` hides them
from its repr, and no log line or error message contains one.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from secrets import token_urlsafe
from typing import TYPE_CHECKING, Final, Literal

from mbe_gateway.errors import SecretError

if TYPE_CHECKING:
    from mbe_gateway.secrets import Secrets

Scope = Literal["read", "admin"]

ADMIN_TOKEN: Final = "control_admin_token"  # noqa: S105 (a secret's name, not its value)
READ_TOKEN: Final = "control_read_token"  # noqa: S105
MIN_CHARS: Final = 32  # a token set by hand must be at least this long (ours have 43)


@dataclass(frozen=True)
class Tokens:
    admin: str = field(repr=False)
    read: str = field(repr=False)

    def scope_of(self, presented: object) -> Scope | None:
        """The scope `presented` grants, or None; both comparisons always run, in constant time."""
        if not isinstance(presented, str) or not presented:
            return None
        given = presented.encode("utf-8", "replace")
        is_admin = hmac.compare_digest(given, self.admin.encode())
        is_read = hmac.compare_digest(given, self.read.encode())
        if is_admin:
            return "admin"
        return "read" if is_read else None


def allows(granted: Scope, needed: Scope) -> bool:
    """Whether a connection with `granted` may call a method that needs `needed`."""
    return granted == "admin" or needed == "read"


def new_token() -> str:
    return token_urlsafe(32)


def ensure_tokens(secrets: Secrets) -> tuple[Tokens, tuple[str, ...]]:
    """Both tokens, generating and storing the missing ones; also the names just generated.

    SecretError when a missing token cannot be stored (no secure keyring and no opt-in file):
    its message says how to set one by hand.
    """
    made: list[str] = []
    values: dict[str, str] = {}
    for name in (ADMIN_TOKEN, READ_TOKEN):
        try:
            values[name] = secrets.get(name)
        except SecretError:
            value = new_token()
            try:
                secrets.set(name, value)
            except SecretError as e:
                raise SecretError(f"the control plane's token {name} cannot be stored: {e}") from None
            values[name] = value
            made.append(name)
    return _checked(values[ADMIN_TOKEN], values[READ_TOKEN]), tuple(made)


def client_token(secrets: Secrets, needed: Scope) -> str:
    """The least powerful stored token that may do `needed`: the read token for reads when set."""
    if needed == "read":
        try:
            return secrets.get(READ_TOKEN)
        except SecretError:
            pass
    try:
        return secrets.get(ADMIN_TOKEN)
    except SecretError as e:
        raise SecretError(
            f"no control token here ({e}); `mbe-gateway init` or the first `mbe-gateway run` makes one"
        ) from None


def _checked(admin: str, read: str) -> Tokens:
    for name, value in ((ADMIN_TOKEN, admin), (READ_TOKEN, read)):
        if len(value) < MIN_CHARS:
            raise SecretError(
                f"secret {name} is too short to be a control token (at least {MIN_CHARS} characters); "
                f"delete it and let `mbe-gateway init` make a random one"
            )
    if hmac.compare_digest(admin.encode(), read.encode()):
        raise SecretError(f"{READ_TOKEN} must differ from {ADMIN_TOKEN}: otherwise it grants admin")
    return Tokens(admin=admin, read=read)
