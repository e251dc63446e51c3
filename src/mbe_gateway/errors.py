"""Every exception mbe-gateway raises on purpose, in one tree.

Callers catch what they can act on; every message says what to do next, and none
ever carries a secret's value (only its name).

    GatewayError
    ├── ConfigError            the config file or an override is wrong (file, key, expected)
    ├── PairingError           a pairing code that is unknown, expired or mistyped
    ├── SecretError            a secret is missing, or its backend is unusable
    │   └── InsecureSecretFile     the opt-in secrets file is readable by others
    ├── StoreError             the gateway's database cannot be used
    │   ├── StoreCorrupt           not a database, or damaged: never recreated over
    │   └── SchemaTooNew           written by a newer mbe-gateway
    ├── MBEError               anything between the gateway and MBE
    │   ├── MBEUnavailable         the server is not running or could not be started
    │   ├── MBEConnectionLost      the server died while a call was in flight
    │   ├── MBETimeout             a call took longer than its timeout
    │   ├── MBEToolError           the server answered the call with an error
    │   ├── MBEProtocolError       the server's answer does not fit the tool contract
    │   └── MBEToolMissing         an (optional) tool is not offered by this server
    ├── ControlError           a control-plane request refused or failed (with its protocol code)
    │   └── DaemonNotRunning       nothing answers on the control plane's address
    ├── AlreadyRunning         another daemon holds the data dir's lock
    ├── ServiceError           installing or querying the OS service (systemd, launchd) failed
    ├── ProviderError          an LLM provider could not answer
    │   ├── ProviderFailed         one provider failed (the chain tries the next)
    │   └── AllProvidersFailed     every provider in the chain failed
    └── ChannelError           a chat platform could not be reached or refused us
        ├── ChannelAuthFailed      the platform rejected our token: fix it, retrying won't help
        └── SendFailed             one message could not be sent (retryable or not, with a hint)
"""

from __future__ import annotations


class GatewayError(Exception):
    """The root: anything mbe-gateway reports to its user as a clear message."""


class ConfigError(GatewayError):
    """The configuration cannot be used; nothing has been touched."""


class PairingError(GatewayError):
    """A pairing code the owner gave is unknown, expired or mistyped; the message says which."""


class SecretError(GatewayError):
    """A secret is missing or its backend cannot be used."""


class InsecureSecretFile(SecretError):
    """The opt-in secrets file is readable or writable by someone other than its owner."""


class StoreError(GatewayError):
    """The gateway's SQLite database cannot be opened or used."""


class StoreCorrupt(StoreError):
    """The database file is damaged or not a database; it is left exactly as it was."""


class SchemaTooNew(StoreError):
    """The database was migrated by a newer mbe-gateway than this one."""


class MBEError(GatewayError):
    """A call to MBE did not give a usable answer."""


class MBEUnavailable(MBEError):
    """The MBE server is not running or could not be started."""


class MBEConnectionLost(MBEError):
    """The MBE server went away while a call was in flight."""


class MBETimeout(MBEError):
    """An MBE call took longer than its timeout; the session is still usable."""


class MBEToolError(MBEError):
    """The MBE server answered a tool call with an error result."""


class MBEProtocolError(MBEError):
    """The MBE server's answer does not fit the tool contract (docs/mbe-contract.md)."""


class MBEToolMissing(MBEError):
    """The MBE server does not offer this tool."""


class ControlError(GatewayError):
    """A control-plane request was refused or could not be served, or the daemon could not be
    reached. `code` is the protocol's error code (docs/control-protocol.md), for clients."""

    def __init__(self, message: str, *, code: str = "failed") -> None:
        super().__init__(message)
        self.code = code


class DaemonNotRunning(ControlError):
    """Nothing answers on the control plane's address: the daemon is not running (or runs
    without its control plane). Commands with a direct path fall back to it on this one."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="unavailable")


class AlreadyRunning(GatewayError):
    """Another mbe-gateway daemon holds the lock on this data dir; nothing was touched."""


class ServiceError(GatewayError):
    """The OS service manager refused a step, or this machine has none we support; the message
    names the command or file and what to do."""


class ProviderError(GatewayError):
    """An LLM provider could not answer."""


class ProviderFailed(ProviderError):
    """One provider failed; `retry_after` is the provider's own hint, in seconds, if it gave one."""

    def __init__(self, message: str, *, provider: str = "", retry_after: float | None = None) -> None:
        super().__init__(message)
        self.provider = provider
        self.retry_after = retry_after


class AllProvidersFailed(ProviderError):
    """Every provider in the failover chain failed or is cooling down.

    `attempts` holds one secret-free line per provider (why it failed, or how long it still
    cools down); `retry_in` is how many seconds until the first provider is tried again.
    """

    def __init__(
        self, message: str, *, attempts: tuple[str, ...] = (), retry_in: float | None = None
    ) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.retry_in = retry_in


class ChannelError(GatewayError):
    """A chat platform could not be reached, or refused what we asked of it."""


class ChannelAuthFailed(ChannelError):
    """The platform rejected our credentials; the message says which secret to fix."""


class SendFailed(ChannelError):
    """A message could not be sent. `retryable` says whether trying again can help (network,
    5xx, 429) or not (chat gone, bot blocked); `retry_after` is the platform's own wait, in seconds."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
