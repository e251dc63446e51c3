"""The configuration: one TOML file read into frozen dataclasses, validated once, here.

Code that runs receives already-valid values, so every check lives in this module and every
problem is reported as one ConfigError that names the file, the key and what was expected.
A missing file means all defaults (the embedded engine, no providers): the program works
with no config at all.

Secrets are never values in the file. Fields that hold one accept only a reference
`"secret:NAME"` (resolved by mbe_gateway.secrets); a pasted token is refused without being
echoed back.

Each section is read by one parser function listed in `_SECTIONS`; adding a section is a
dataclass, a parser and one line there (plus a field on Config).
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
import shlex
import shutil
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal, TypeVar
from urllib.parse import urlsplit

from mbe_gateway import paths
from mbe_gateway.errors import ConfigError

SECRET_PREFIX: Final = "secret:"  # noqa: S105 (a reference prefix, not a secret)
_SECRET_NAME = re.compile(r"[A-Za-z0-9_]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

Language = Literal["en", "zh"]
DMPolicy = Literal["pairing", "allowlist", "open"]
ProviderKind = Literal["openai", "anthropic", "mbe", "local"]
SecretsBackend = Literal["auto", "keyring", "file", "env"]

LANGUAGES: Final[tuple[Language, ...]] = ("en", "zh")
DM_POLICIES: Final[tuple[DMPolicy, ...]] = ("pairing", "allowlist", "open")
PROVIDER_KINDS: Final[tuple[ProviderKind, ...]] = ("openai", "anthropic", "mbe", "local")
SECRETS_BACKENDS: Final[tuple[SecretsBackend, ...]] = ("auto", "keyring", "file", "env")
LOG_LEVELS: Final = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class SecretRef:
    """A reference to a secret by name (`"secret:NAME"` in the file), never its value.

    Names are case-insensitive and kept lower-case, so `secret:TELEGRAM_TOKEN`, the env var
    MBE_GATEWAY_SECRET_TELEGRAM_TOKEN and `secrets set telegram_token` all mean one secret.
    """

    name: str

    def __post_init__(self) -> None:
        if not _SECRET_NAME.fullmatch(self.name):
            raise ValueError("a secret name is letters, digits and _")
        object.__setattr__(self, "name", self.name.lower())

    def __str__(self) -> str:
        return SECRET_PREFIX + self.name


@dataclass(frozen=True)
class GatewaySettings:
    language: Language = "en"
    log_level: str = "info"
    late_after_minutes: int = 10  # older messages (after downtime) are answered together, marked late
    drain_seconds: float = 10.0  # on SIGTERM/SIGINT: how long replies being written get to finish
    rate_limit_burst: int = 10  # messages a sender may send at once...
    rate_limit_per_minute: float = 20.0  # ...then this many a minute; 0 = no limit


@dataclass(frozen=True)
class MBESettings:
    command: tuple[str, ...] | None = None  # None: the embedded engine
    url: str | None = None  # a remote MBE over streamable HTTP (exclusive with command)
    api_key: SecretRef | None = None
    env: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType({})
    )  # values may be "secret:NAME"
    pass_env: tuple[str, ...] = ()
    call_timeout: float = 10.0
    connect_timeout: float = 30.0


@dataclass(frozen=True)
class ProviderSettings:
    kind: ProviderKind
    name: str  # a label for logs and doctor
    model: str = ""
    base_url: str | None = None
    api_key: SecretRef | None = None
    timeout: float = 60.0
    max_tokens: int = 1024
    temperature: float = 0.7
    path: str | None = None  # local: a GGUF file; None = the bundled small model
    context_window: int = 4096  # local: n_ctx


@dataclass(frozen=True)
class LLMSettings:
    providers: tuple[ProviderSettings, ...] = ()


@dataclass(frozen=True)
class TelegramSettings:
    enabled: bool = False
    token: SecretRef | None = None
    api_base: str = "https://api.telegram.org"
    dm_policy: DMPolicy = "pairing"
    allow_from: tuple[str, ...] = ()
    allow_groups: tuple[str, ...] = ()  # group chat ids the bot answers in; "*" = any


@dataclass(frozen=True)
class DiscordSettings:
    enabled: bool = False
    token: SecretRef | None = None
    rest_url: str = "https://discord.com/api/v10"
    dm_policy: DMPolicy = "pairing"
    allow_from: tuple[str, ...] = ()
    allow_groups: tuple[str, ...] = ()  # group chat ids the bot answers in; "*" = any


@dataclass(frozen=True)
class SlackSettings:
    enabled: bool = False
    bot_token: SecretRef | None = None
    app_token: SecretRef | None = None
    api_base: str = "https://slack.com/api/"
    dm_policy: DMPolicy = "pairing"
    allow_from: tuple[str, ...] = ()
    allow_groups: tuple[str, ...] = ()  # group chat ids the bot answers in; "*" = any


@dataclass(frozen=True)
class ChannelsSettings:
    telegram: TelegramSettings = field(default_factory=TelegramSettings)
    discord: DiscordSettings = field(default_factory=DiscordSettings)
    slack: SlackSettings = field(default_factory=SlackSettings)


@dataclass(frozen=True)
class ControlSettings:
    host: str = "127.0.0.1"
    port: int = 18789
    allow_remote: bool = False  # binding anything but loopback needs this, and is warned about


@dataclass(frozen=True)
class SecretsSettings:
    backend: SecretsBackend = "auto"


@dataclass(frozen=True)
class AssistantSettings:
    """How the assistant converses: its persona, the reply decorations, context and pacing."""

    persona: str = ""  # "": the built-in persona, in [gateway] language
    show_novelty: bool = True  # the "new to you (surprise 0.82)" line
    show_expert: bool = True  # the "answered by the X expert" line...
    expert_confidence: float = 0.8  # ...when routing is at least this confident
    debounce: float = 0.0  # seconds of quiet to wait for more of a burst before answering
    history_turns: int = 12  # recent exchanges of the session put in the prompt
    context_chars: int = 8000  # bound on the prompt's size (system + history + message)
    idle_reset_minutes: int = 240  # a session quiet this long starts afresh; 0 = never
    memory_top_k: int = 5  # memories recalled per message
    max_message_chars: int = 16000  # longer messages get a polite refusal


@dataclass(frozen=True)
class Config:
    path: Path  # where the config was (or would be) read from
    exists: bool  # False: no file, every value is a default
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    assistant: AssistantSettings = field(default_factory=AssistantSettings)
    mbe: MBESettings = field(default_factory=MBESettings)
    llm: LLMSettings = field(default_factory=LLMSettings)
    channels: ChannelsSettings = field(default_factory=ChannelsSettings)
    control: ControlSettings = field(default_factory=ControlSettings)
    secrets: SecretsSettings = field(default_factory=SecretsSettings)


def load_config(path: Path | None = None) -> Config:
    """Read and validate the config file (default: paths.config_file()); no file = defaults."""
    path = path if path is not None else paths.config_file()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Config(path=path, exists=False)
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory; expected the config file (TOML)") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read ({e.strerror}); check its permissions") from None
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {_toml_error(str(e))}") from None

    sections: dict[str, Any] = {}
    for key, value in document.items():
        if key not in _SECTIONS:
            raise ConfigError(f"{path}: [{key}]: unknown section{_did_you_mean(key, _SECTIONS, '[{}]')}")
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: {key}: expected a table [{key}], got {_show(value)}")
    for name, parse in _SECTIONS.items():
        table = _Table(path, f"[{name}]", document.get(name, {}))
        sections[name] = parse(table)
        table.reject_unknown()
    return Config(path=path, exists=True, **sections)


def _toml_error(message: str) -> str:
    """tomllib says 'Invalid value (at line 3, column 10)'; we say 'line 3, column 10: ...'."""
    match = re.fullmatch(r"(.*) \(at line (\d+), column (\d+)\)", message)
    if match:
        return f"line {match[2]}, column {match[3]}: {match[1]} (not valid TOML)"
    return f"{message} (not valid TOML)"


def _did_you_mean(word: str, known: Any, template: str = "{}") -> str:
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f"; did you mean {template.format(close[0])}?" if close else ""


def _show(value: object) -> str:
    """A value as the user wrote it in TOML, shortened (never used for secret fields)."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


_T = TypeVar("_T", bound=str)
_MISSING: Final = object()


@dataclass
class _Table:
    """One TOML table being read: where it is (for messages) and which keys the parser knows."""

    file: Path
    where: str  # "[mbe]", "[channels.telegram]", "[[llm.providers]] #2"
    data: Mapping[str, Any]
    known: set[str] = field(default_factory=set)

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.file}: {self.where} {key}: {message}")

    def has(self, key: str) -> bool:
        self.known.add(key)
        return key in self.data

    def _get(self, key: str) -> Any:
        self.known.add(key)
        return self.data.get(key, _MISSING)

    def _expect(self, key: str, expected: str, value: object) -> ConfigError:
        return self.error(key, f"expected {expected}, got {_show(value)}")

    def reject_unknown(self) -> None:
        for key in self.data:
            if key not in self.known:
                raise self.error(key, f"unknown key{_did_you_mean(key, self.known)}")

    def table(self, key: str) -> _Table:
        value = self._get(key)
        if value is _MISSING:
            value = {}
        elif not isinstance(value, dict):
            raise self._expect(key, f"a table [{self.where.strip('[]')}.{key}]", value)
        return _Table(self.file, f"[{self.where.strip('[]')}.{key}]", value)

    def string(self, key: str, default: str, *, expected: str = "a non-empty string") -> str:
        value = self._get(key)
        if value is _MISSING:
            return default
        if not isinstance(value, str) or not value.strip():
            raise self._expect(key, expected, value)
        return value

    def optional_string(self, key: str) -> str | None:
        return self.string(key, "") or None

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            raise self._expect(key, "true or false", value)
        return value

    def number(self, key: str, default: float, *, expected: str, ok: Callable[[float], bool]) -> float:
        value = self._get(key)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or not ok(value):
            raise self._expect(key, expected, value)
        return float(value)

    def seconds(self, key: str, default: float) -> float:
        return self.number(key, default, expected="a number of seconds > 0", ok=lambda v: 0 < v < 1e9)

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self._get(key)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self._expect(key, f"a whole number from {low} to {high}", value)
        return value

    def choice(self, key: str, options: tuple[_T, ...], default: _T) -> _T:
        value = self._get(key)
        if value is _MISSING:
            return default
        for option in options:
            if value == option:
                return option
        raise self._expect(key, " | ".join(json.dumps(o) for o in options), value)

    def url(self, key: str, default: str | None, *, trailing_slash: bool | None = None) -> str | None:
        """An http(s) URL with a host; trailing_slash True/False adds/strips one (None: as written)."""
        value = self._get(key)
        if value is _MISSING:
            return default
        expected = 'an http:// or https:// URL with a host, e.g. "https://example.com/api"'
        if not isinstance(value, str) or any(c.isspace() for c in value):
            raise self._expect(key, expected, value)
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 (raises ValueError on a bad port)
        except ValueError:
            raise self._expect(key, expected, value) from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise self._expect(key, expected, value)
        if trailing_slash is True:
            return value.rstrip("/") + "/"
        if trailing_slash is False:
            return value.rstrip("/")
        return value

    def strings(
        self, key: str, *, pattern: re.Pattern[str] | None = None, what: str = "strings"
    ) -> tuple[str, ...]:
        value = self._get(key)
        if value is _MISSING:
            return ()
        expected = f"a list of {what}"
        if not isinstance(value, list):
            raise self._expect(key, expected, value)
        for item in value:
            if not isinstance(item, str) or not item or (pattern and not pattern.fullmatch(item)):
                raise self.error(key, f"expected {expected}, got {_show(item)} in the list")
        return tuple(value)

    def secret(self, key: str, suggested_name: str) -> SecretRef | None:
        """A `"secret:NAME"` reference; anything else is refused WITHOUT echoing the value."""
        value = self._get(key)
        if value is _MISSING:
            return None
        return self.secret_value(key, value, suggested_name)

    def secret_value(self, key: str, value: object, suggested_name: str) -> SecretRef:
        how = f'run `mbe-gateway secrets set {suggested_name}` and write {key} = "secret:{suggested_name}"'
        if not isinstance(value, str):
            raise self.error(key, f'expected a reference "secret:NAME"; {how}')
        if not value.startswith(SECRET_PREFIX):
            raise self.error(key, f"secrets are not kept in the config file; {how}")
        name = value.removeprefix(SECRET_PREFIX)
        if not _SECRET_NAME.fullmatch(name):
            raise self.error(key, 'expected "secret:NAME", where NAME is letters, digits and _')
        return SecretRef(name)


def _gateway(t: _Table) -> GatewaySettings:
    level = t.string("log_level", "info").lower()
    if level not in LOG_LEVELS:
        raise t.error("log_level", f"expected {' | '.join(map(json.dumps, LOG_LEVELS))}, got {_show(level)}")
    return GatewaySettings(
        language=t.choice("language", LANGUAGES, "en"),
        log_level=level,
        late_after_minutes=t.integer("late_after_minutes", 10, 1, 525_600),
        drain_seconds=t.number(
            "drain_seconds", 10.0, expected="seconds, from 0 to 600", ok=lambda v: 0 <= v <= 600
        ),
        rate_limit_burst=t.integer("rate_limit_burst", 10, 1, 10_000),
        rate_limit_per_minute=t.number(
            "rate_limit_per_minute",
            20.0,
            expected="messages a minute, from 0 (no limit) to 100000",
            ok=lambda v: 0 <= v <= 100_000,
        ),
    )


def _assistant(t: _Table) -> AssistantSettings:
    return AssistantSettings(
        persona=t.string("persona", "", expected="your system prompt, as non-empty text"),
        show_novelty=t.boolean("show_novelty", True),
        show_expert=t.boolean("show_expert", True),
        expert_confidence=t.number(
            "expert_confidence", 0.8, expected="a number from 0 to 1", ok=lambda v: 0 <= v <= 1
        ),
        debounce=t.number("debounce", 0.0, expected="seconds from 0 to 30", ok=lambda v: 0 <= v <= 30),
        history_turns=t.integer("history_turns", 12, 0, 100),
        context_chars=t.integer("context_chars", 8000, 1000, 1_000_000),
        idle_reset_minutes=t.integer("idle_reset_minutes", 240, 0, 525_600),
        memory_top_k=t.integer("memory_top_k", 5, 0, 20),
        max_message_chars=t.integer("max_message_chars", 16000, 100, 32_000),
    )


def _mbe(t: _Table) -> MBESettings:
    command = _command(t)
    url = t.url("url", None)
    if command is not None and url is not None:
        raise t.error("url", "command and url are exclusive: keep the one that reaches your MBE")
    env_table = t.table("env")
    env: dict[str, str] = {}
    for name, value in env_table.data.items():
        if not _ENV_NAME.fullmatch(name):
            raise env_table.error(name, "expected an environment variable name (letters, digits, _)")
        if not isinstance(value, str):
            raise env_table.error(name, f"expected a string, got {_show(value)}")
        if value.startswith(SECRET_PREFIX):
            value = str(env_table.secret_value(name, value, name.lower()))
        env[name] = value
    return MBESettings(
        command=command,
        url=url,
        api_key=t.secret("api_key", "mbe_api_key"),
        env=MappingProxyType(env),
        pass_env=t.strings("pass_env", pattern=_ENV_NAME, what="environment variable names"),
        call_timeout=t.seconds("call_timeout", 10.0),
        connect_timeout=t.seconds("connect_timeout", 30.0),
    )


def _command(t: _Table) -> tuple[str, ...] | None:
    """A command as a list of words, or one string split like a shell would."""
    if not t.has("command"):
        return None
    value = t.data["command"]
    if isinstance(value, str) and value.strip():
        try:
            return tuple(shlex.split(value))
        except ValueError:
            raise t.error("command", "has unbalanced quotes; write it as a list of words") from None
    words = t.strings("command")
    if not words:
        raise t.error("command", 'expected a command, e.g. ["mbe", "serve", "--stdio"], got an empty list')
    return words


def _llm(t: _Table) -> LLMSettings:
    if not t.has("providers"):
        return LLMSettings()
    blocks = t.data["providers"]
    if not isinstance(blocks, list) or not all(isinstance(b, dict) for b in blocks):
        raise t.error("providers", "expected [[llm.providers]] blocks (an array of tables)")
    providers: list[ProviderSettings] = []
    for number, block in enumerate(blocks, start=1):
        table = _Table(t.file, f"[[llm.providers]] #{number}", block)
        provider = _provider(table)
        table.reject_unknown()
        if any(p.name == provider.name for p in providers):
            raise table.error("name", f"{json.dumps(provider.name)} is used twice; give each provider a name")
        providers.append(provider)
    return LLMSettings(providers=tuple(providers))


def _provider(t: _Table) -> ProviderSettings:
    if not t.has("kind"):
        raise t.error("kind", f"required: one of {' | '.join(map(json.dumps, PROVIDER_KINDS))}")
    kind = t.choice("kind", PROVIDER_KINDS, "openai")
    model = t.string("model", "")
    base_url = t.url("base_url", None, trailing_slash=False)
    if kind == "openai" and base_url is None:
        raise t.error("base_url", 'required for kind = "openai", e.g. "http://127.0.0.1:11434/v1"')
    if kind in ("openai", "anthropic") and not model:
        raise t.error("model", f'required for kind = "{kind}"')
    for local_only in ("path", "context_window"):
        if kind != "local" and t.has(local_only):
            raise t.error(local_only, 'only used by kind = "local"')
    path = t.optional_string("path")
    path = str(Path(path).expanduser()) if path else None
    detail = model or path or ("bundled" if kind == "local" else "default")
    return ProviderSettings(
        kind=kind,
        name=t.string("name", f"{kind}:{detail}"),
        model=model,
        base_url=base_url,
        api_key=t.secret("api_key", f"{kind}_api_key"),
        timeout=t.seconds("timeout", 60.0),
        max_tokens=t.integer("max_tokens", 1024, 1, 1_000_000),
        temperature=t.number("temperature", 0.7, expected="a number from 0 to 2", ok=lambda v: 0 <= v <= 2),
        path=path,
        context_window=t.integer("context_window", 4096, 128, 10_000_000),
    )


def _dm_access(t: _Table) -> tuple[DMPolicy, tuple[str, ...], tuple[str, ...]]:
    """Who may talk to the bot: the DM policy, the users always allowed, and the groups it
    answers in. Ids may be written as numbers or strings."""
    policy = t.choice("dm_policy", DM_POLICIES, "pairing")
    allow_from = _ids(t, "allow_from", "user ids")
    if policy == "allowlist" and not allow_from:
        raise t.error("allow_from", 'dm_policy = "allowlist" needs at least one user id here')
    return policy, allow_from, _ids(t, "allow_groups", 'group chat ids (or "*" for any group)')


def _ids(t: _Table, key: str, what: str) -> tuple[str, ...]:
    if not t.has(key):
        return ()
    raw = t.data[key]
    if not isinstance(raw, list) or not all(
        isinstance(u, str | int) and not isinstance(u, bool) and str(u) for u in raw
    ):
        raise t.error(key, f"expected a list of {what}, got {_show(raw)}")
    return tuple(str(u) for u in raw)


def _require_token(t: _Table, enabled: bool, key: str, ref: SecretRef | None, suggested: str) -> None:
    if enabled and ref is None:
        raise t.error(
            key,
            f"required when enabled = true; run `mbe-gateway secrets set {suggested}` "
            f'and write {key} = "secret:{suggested}"',
        )


def _telegram(t: _Table) -> TelegramSettings:
    enabled = t.boolean("enabled", False)
    token = t.secret("token", "telegram_token")
    _require_token(t, enabled, "token", token, "telegram_token")
    policy, allow_from, groups = _dm_access(t)
    api_base = t.url("api_base", TelegramSettings.api_base, trailing_slash=False)
    return TelegramSettings(enabled, token, api_base or TelegramSettings.api_base, policy, allow_from, groups)


def _discord(t: _Table) -> DiscordSettings:
    enabled = t.boolean("enabled", False)
    token = t.secret("token", "discord_token")
    _require_token(t, enabled, "token", token, "discord_token")
    policy, allow_from, groups = _dm_access(t)
    rest_url = t.url("rest_url", DiscordSettings.rest_url, trailing_slash=False)
    return DiscordSettings(enabled, token, rest_url or DiscordSettings.rest_url, policy, allow_from, groups)


def _slack(t: _Table) -> SlackSettings:
    enabled = t.boolean("enabled", False)
    bot_token = t.secret("bot_token", "slack_bot_token")
    app_token = t.secret("app_token", "slack_app_token")
    _require_token(t, enabled, "bot_token", bot_token, "slack_bot_token")
    _require_token(t, enabled, "app_token", app_token, "slack_app_token")
    policy, allow_from, groups = _dm_access(t)
    # slack-sdk joins method names onto the base, so it must end in "/".
    api_base = t.url("api_base", SlackSettings.api_base, trailing_slash=True)
    return SlackSettings(
        enabled, bot_token, app_token, api_base or SlackSettings.api_base, policy, allow_from, groups
    )


_CHANNELS: Final[dict[str, Callable[[_Table], Any]]] = {
    "telegram": _telegram,
    "discord": _discord,
    "slack": _slack,
}


def _channels(t: _Table) -> ChannelsSettings:
    for name in t.data:
        if name not in _CHANNELS:
            raise t.error(name, f"unknown channel{_did_you_mean(name, _CHANNELS)}")
    parsed: dict[str, Any] = {}
    for name, parse in _CHANNELS.items():
        table = t.table(name)
        parsed[name] = parse(table)
        table.reject_unknown()
    return ChannelsSettings(**parsed)


def _control(t: _Table) -> ControlSettings:
    host = t.string("host", "127.0.0.1", expected="a host name or address")
    allow_remote = t.boolean("allow_remote", False)
    if not allow_remote and not is_loopback(host):
        raise t.error(
            "host",
            f"{json.dumps(host)} is not a loopback address: the control plane would be reachable from "
            'other machines; use "127.0.0.1", or set allow_remote = true if you really mean it',
        )
    return ControlSettings(host=host, port=t.integer("port", 18789, 1, 65535), allow_remote=allow_remote)


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable only from this machine: "localhost", 127.0.0.0/8 or ::1."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # another name: it may resolve to anything


def _secrets(t: _Table) -> SecretsSettings:
    return SecretsSettings(backend=t.choice("backend", SECRETS_BACKENDS, "auto"))


_SECTIONS: Final[dict[str, Callable[[_Table], Any]]] = {
    "gateway": _gateway,
    "assistant": _assistant,
    "mbe": _mbe,
    "llm": _llm,
    "channels": _channels,
    "control": _control,
    "secrets": _secrets,
}


def default_config_text() -> str:
    """The commented file `mbe-gateway init` writes: every section, every example commented out.

    Loading it gives exactly the defaults; uncommenting any `# key = value` line gives a valid
    value (a test checks both).
    """
    return _DEFAULT_CONFIG


def write_default_config(path: Path, *, force: bool = False) -> Path | None:
    """Write the default file to `path`, creating its directories. An existing file is refused
    unless `force`, and then kept as `<name>.bak`; returns that backup's path, if one was made."""
    backup = path.with_name(path.name + ".bak")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise ConfigError(f"{path}: is a directory; expected the config file (TOML)")
        existed = path.exists()
        if existed and not force:
            raise ConfigError(f"{path}: already exists; use --force to replace it (it is kept as {backup})")
        if existed:
            shutil.copy2(path, backup)
        path.write_text(default_config_text(), encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot be written ({e.strerror})") from None
    return backup if existed else None


_DEFAULT_CONFIG: Final = """\
# mbe-gateway configuration.
# Everything here is optional: with every line commented out, the gateway runs the embedded
# engine and, if installed (the `local` extra), the bundled small local model.
# Check this file with `mbe-gateway config check`.
#
# Secrets (API keys, bot tokens) are never written here. Store one with
#     mbe-gateway secrets set NAME
# and refer to it as "secret:NAME". On a machine without a keyring, set the environment
# variable MBE_GATEWAY_SECRET_NAME instead (or see [secrets] below).

[gateway]
# language = "en"                   # "en" | "zh": the language of the bot's own words
# log_level = "info"                # "debug" | "info" | "warning" | "error"
# late_after_minutes = 10           # messages older than this when they reach us (after
#                                   # downtime) are answered together, in one reply marked late
# drain_seconds = 10                # on SIGTERM or Ctrl-C: how long replies being written get to
#                                   # finish and go out before the daemon stops (then the next
#                                   # run answers what is left)
# rate_limit_burst = 10             # messages one sender may send in a row...
# rate_limit_per_minute = 20        # ...then this many a minute (0 = no limit); messages past
#                                   # the limit are not answered or stored, and the sender is
#                                   # told once

[assistant]
# persona = "You are my patient cooking and travel companion."   # default: a built-in one
# show_novelty = true               # add "💡 New to you (surprise 0.82)" to novel answers
# show_expert = true                # add "🤖 Answered by our expert: Chef"...
# expert_confidence = 0.8           # ...when routing is at least this confident
# debounce = 0.0                    # seconds to wait for more of a burst (a burst that
#                                   # arrives while a reply is being written joins it anyway)
# history_turns = 12                # recent exchanges the model sees
# context_chars = 8000              # bound on the prompt (lower it for small local models)
# idle_reset_minutes = 240          # start afresh after this long without messages; 0 = never
# memory_top_k = 5                  # memories recalled per message
# max_message_chars = 16000         # longer messages are politely refused

[mbe]
# By default the gateway spawns its own embedded engine. To use an installed MBE instead,
# give the command that starts its MCP server over stdio...
# command = ["mbe", "serve", "--stdio"]
# pass_env = ["CUDA_VISIBLE_DEVICES"]   # our environment variables the server may see
# call_timeout = 10.0               # seconds for one tool call
# connect_timeout = 30.0            # seconds to start and greet the server
# ...or reach a remote MBE over streamable HTTP, instead of a command:
#   url = "http://gpu-box:8001/mcp"
#   api_key = "secret:mbe_api_key"

# Extra environment for the MBE server; values may be "secret:NAME" references.
[mbe.env]
# MBE_LOG_LEVEL = "info"
# MBE_LICENSE = "secret:mbe_license"

# LLM providers, tried in order (a failover chain). Repeat the block for each provider.
# kind: "openai" (any OpenAI-compatible server: OpenAI, Ollama, vLLM, llama.cpp, DeepSeek,
# Qwen...), "anthropic", "mbe" (MBE's own generate tool) or "local" (a GGUF model in-process).
#
# [[llm.providers]]
# kind = "openai"
# name = "ollama"                   # a label for logs and `mbe-gateway doctor`
# base_url = "http://127.0.0.1:11434/v1"
# model = "qwen2.5:7b"
# api_key = "secret:openai_api_key" # not needed by a local Ollama
# timeout = 60.0
# max_tokens = 1024
# temperature = 0.7
#
# [[llm.providers]]
# kind = "anthropic"
# model = "claude-sonnet-4-5"
# api_key = "secret:anthropic_api_key"
#
# [[llm.providers]]
# kind = "local"
# path = "~/models/qwen2.5-0.5b-instruct-q4_k_m.gguf"   # default: the bundled small model
# context_window = 4096

[channels.telegram]
# enabled = false
# token = "secret:telegram_token"
# api_base = "https://api.telegram.org"
# dm_policy = "pairing"             # "pairing" | "allowlist" | "open"
# allow_from = []                   # user ids always allowed to talk to the bot
# allow_groups = []                 # group chats the bot answers in (when mentioned); "*" = any

[channels.discord]
# enabled = false
# token = "secret:discord_token"
# rest_url = "https://discord.com/api/v10"
# dm_policy = "pairing"
# allow_from = []
# allow_groups = []

[channels.slack]
# enabled = false
# bot_token = "secret:slack_bot_token"   # xoxb-...
# app_token = "secret:slack_app_token"   # xapp-... (Socket Mode)
# api_base = "https://slack.com/api/"
# dm_policy = "pairing"
# allow_from = []
# allow_groups = []

# The control plane (CLI, web page, metrics); it always asks for its token.
[control]
# host = "127.0.0.1"
# port = 18789
# allow_remote = false              # must be true to bind anything but loopback (a warning at start)

[secrets]
# Where "secret:NAME" is looked up after the environment variable MBE_GATEWAY_SECRET_NAME:
# "auto" uses the OS keyring when it is a secure one; "keyring" uses whatever keyring is
# configured; "file" opts in to a plain file in the data dir readable only by you; "env"
# uses environment variables only.
# backend = "auto"
"""
