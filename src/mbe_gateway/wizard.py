"""`mbe-gateway init`: the setup wizard. Asks, or takes from flags, then writes everything once.

Every question has a flag (`Given`), and `--yes` takes the default of any question not
answered by one, so a scripted install never blocks on a prompt. The defaults are the
current config's values, so running init again edits the file (config_document keeps what it
does not ask about) instead of starting over. Answers are collected first and applied last:
a question left unanswered (stdin ended) or a config that would not load changes nothing.

Tokens and API keys go straight into the secrets store (read hidden, never echoed, never in
the config file, which gets only `"secret:NAME"`); where no store is usable here, the wizard
says how to set them instead and carries on.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from mbe_gateway import config_document, paths
from mbe_gateway.config import (
    DM_POLICIES,
    LANGUAGES,
    PROVIDER_KINDS,
    SECRETS_BACKENDS,
    Config,
    DMPolicy,
    Language,
    ProviderSettings,
    SecretRef,
    SecretsBackend,
    load_config,
)
from mbe_gateway.errors import ConfigError, SecretError
from mbe_gateway.secrets import Secrets, env_var
from mbe_gateway.texts import say

if TYPE_CHECKING:
    from rich.console import Console

CHANNELS: Final = ("telegram", "discord", "slack")
LANGUAGE_QUESTION: Final = "Language / 语言 (en, zh)"
DEFAULT_OPENAI_URL: Final = "http://127.0.0.1:11434/v1"  # Ollama on the same machine
DEFAULT_MODELS: Final = {"openai": "qwen2.5:7b", "anthropic": "claude-sonnet-4-5"}


@dataclass(frozen=True)
class SecretSlot:
    """One secret a channel or provider needs: its config key, its name in the store, and the
    shape a real one has (a typo caught here is a failed start avoided)."""

    key: str
    name: str
    shape: str = ""
    pattern: re.Pattern[str] | None = None


CHANNEL_SECRETS: Final[dict[str, tuple[SecretSlot, ...]]] = {
    "telegram": (SecretSlot("token", "telegram_token", "123456789:AA…", re.compile(r"\d+:[\w-]{20,}")),),
    "discord": (
        SecretSlot(
            "token", "discord_token", "xxxx.yyyy.zzzz", re.compile(r"[\w-]{16,}\.[\w-]{4,}\.[\w-]{16,}")
        ),
    ),
    "slack": (
        SecretSlot("bot_token", "slack_bot_token", "xoxb-…", re.compile(r"xoxb-\S+")),
        SecretSlot("app_token", "slack_app_token", "xapp-…", re.compile(r"xapp-\S+")),
    ),
}


@dataclass(frozen=True)
class Given:
    """The answers given as flags; None (or empty) = ask, or take the default under `--yes`."""

    language: str | None = None
    channels: str | None = None  # "telegram,slack" or "none"
    dm_policy: str | None = None
    allow_from: tuple[str, ...] = ()  # "telegram:12345"
    providers: str | None = None  # "openai,local" or "none"
    openai_base_url: str | None = None
    openai_model: str | None = None
    anthropic_model: str | None = None
    local_path: str | None = None
    secret_files: tuple[str, ...] = ()  # "telegram_token=/path" ("-" = stdin)
    secrets_backend: str | None = None
    assume_defaults: bool = False  # --yes


@dataclass
class Answers:
    language: Language
    secrets_backend: SecretsBackend = "auto"
    channels: list[str] = field(default_factory=list)
    dm_policy: dict[str, DMPolicy] = field(default_factory=dict)
    allow_from: dict[str, list[str]] = field(default_factory=dict)
    providers: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    secrets: dict[str, str] = field(default_factory=dict)  # name -> value, for the store only


class Asker:
    """Puts a question to the person, or answers it from the defaults under `--yes`.

    Prompts go to the console; answers come from stdin, a line each, so the wizard can be
    driven by a terminal or by a pipe. Hidden answers use getpass only on a terminal.
    """

    def __init__(self, console: Console, *, assume_defaults: bool) -> None:
        self.console = console
        self.assume_defaults = assume_defaults
        self.language: Language = "en"  # until the first question is answered

    def text(
        self, question: str, default: str = "", *, check: Callable[[str], str | None] | None = None
    ) -> str:
        """An answer; `check` returns an error message to ask again (the default is trusted)."""
        if self.assume_defaults:
            return default
        while True:
            shown = f" [{default}]" if default else ""
            self.console.print(f"{question}{shown}: ", end="", style="bold")
            answer = self._line(question).strip() or default
            if not sys.stdin.isatty():  # a piped answer is not echoed: end the prompt's line
                self.console.print()
            problem = check(answer) if check and answer else None
            if problem is None:
                return answer
            self.console.print(problem, style="yellow")

    def secret(self, question: str, *, check: Callable[[str], str | None] | None = None) -> str:
        """A hidden answer; empty = none given (keep what is stored, or go without)."""
        if self.assume_defaults:
            return ""
        while True:
            if sys.stdin.isatty():
                import getpass

                answer = getpass.getpass(f"{question}: ").strip()
            else:
                self.console.print(f"{question}: ", end="", style="bold")
                answer = self._line(question).strip()
                self.console.print()
            problem = check(answer) if check and answer else None
            if problem is None:
                return answer
            self.console.print(problem, style="yellow")

    def _line(self, question: str) -> str:
        line = sys.stdin.readline()
        if not line:  # end of input: an empty answer would be "\n"
            raise ConfigError(say(self.language, "wizard_no_answer", question=question))
        return line


def run(config_path: Path, given: Given, *, fresh: bool, console: Console) -> Config:
    """Ask, write the config, store the secrets; returns the config as written."""
    current = load_config(config_path) if not fresh else Config(path=config_path, exists=False)
    secrets = Secrets(current.secrets, paths.data_dir())
    asker = Asker(console, assume_defaults=given.assume_defaults)
    from_files = _secrets_from_files(given.secret_files)
    answers = _ask(current, given, asker, secrets, from_files)
    language = answers.language
    console.print()

    document = config_document.open_document(config_path, fresh=fresh)
    _apply(document, current, answers)
    saved = config_document.save(document, config_path)
    if saved is None:
        console.print(say(language, "wizard_unchanged", path=config_path))
        config = current if current.exists else load_config(config_path)
    else:
        config, backup = saved
        if backup is None:
            console.print(say(language, "wizard_wrote", path=config_path))
        else:
            console.print(say(language, "wizard_wrote_backup", path=config_path, backup=backup))

    secrets = Secrets(config.secrets, paths.data_dir())
    for name, value in answers.secrets.items():
        try:
            where = secrets.set(name, value)
        except SecretError as e:
            console.print(say(language, "wizard_not_stored", name=name, error=e), style="yellow")
        else:
            console.print(say(language, "wizard_stored", name=name, where=where))
    return config


def _ask(
    current: Config, given: Given, asker: Asker, secrets: Secrets, from_files: Mapping[str, str]
) -> Answers:
    language = _choice(
        asker, LANGUAGE_QUESTION, LANGUAGES, given.language, current.gateway.language, "--language"
    )
    asker.language = language
    answers = Answers(language=language)
    asker.console.print(say(language, "wizard_intro"))
    key = "wizard_editing" if current.exists else "wizard_new"
    asker.console.print(say(language, key, path=current.path), style="dim")
    answers.secrets_backend = _ask_secrets_backend(asker, current, given, secrets)

    enabled = [name for name in CHANNELS if getattr(current.channels, name).enabled]
    answers.channels = _list(
        asker, say(language, "wizard_channels"), CHANNELS, given.channels, enabled, "--channels"
    )
    for channel in answers.channels:
        settings = getattr(current.channels, channel)
        asker.console.print(say(language, f"wizard_how_{channel}"), style="cyan")
        for slot in CHANNEL_SECRETS[channel]:
            value = _secret(asker, answers, slot, getattr(settings, slot.key), secrets, from_files)
            if value:
                answers.secrets[slot.name] = value
    _ask_dm_policies(asker, current, given, answers)

    kinds = [p.kind for p in current.llm.providers]
    chosen = _list(
        asker, say(language, "wizard_providers"), PROVIDER_KINDS, given.providers, kinds, "--providers"
    )
    for kind in dict.fromkeys(chosen):
        existing = next((p for p in current.llm.providers if p.kind == kind), None)
        answers.providers.append(
            (kind, _provider(asker, language, kind, existing, given, secrets, from_files, answers))
        )
    unused = sorted(set(from_files) - set(answers.secrets))
    if unused:
        raise ConfigError(f"--secret-file {unused[0]}: no question asks for that secret (check the name)")
    return answers


def _ask_secrets_backend(asker: Asker, current: Config, given: Given, secrets: Secrets) -> SecretsBackend:
    """Where tokens will be stored. Asked only where the default cannot store them (no secure
    keyring: a headless Pi), so the tokens typed next are not typed in vain; `--yes` keeps the
    current backend unless the flag says otherwise."""
    backend = current.secrets.backend
    if given.secrets_backend is not None or (backend == "auto" and secrets.is_degraded()):
        question = say(asker.language, "wizard_secrets_backend")
        default = "file" if given.secrets_backend is None and not asker.assume_defaults else backend
        chosen: SecretsBackend = _choice(
            asker, question, SECRETS_BACKENDS, given.secrets_backend, default, "--secrets-backend"
        )
        return chosen
    return backend


def _ask_dm_policies(asker: Asker, current: Config, given: Given, answers: Answers) -> None:
    """One question for every chosen channel when they share a policy (or the flag gives it);
    one per channel when the file already gives them different ones."""
    language = asker.language
    policies = {channel: getattr(current.channels, channel).dm_policy for channel in answers.channels}
    shared = given.dm_policy is not None or len(set(policies.values())) <= 1
    groups = [answers.channels] if shared else [[channel] for channel in answers.channels]
    for group in groups:
        if not group:
            continue
        question = say(language, "wizard_dm_policy") + ("" if shared else f" — {group[0]}")
        policy = _choice(asker, question, DM_POLICIES, given.dm_policy, policies[group[0]], "--dm-policy")
        for channel in group:
            answers.dm_policy[channel] = policy
    allow_from = _allow_from_flags(given.allow_from)
    for channel in answers.channels:
        if answers.dm_policy[channel] != "allowlist":
            continue
        current_ids = ",".join(getattr(current.channels, channel).allow_from)
        ids = allow_from.get(channel) or _split(
            asker.text(say(language, "wizard_allow_from", channel=channel), current_ids)
        )
        if not ids:
            raise ConfigError(f"dm_policy allowlist on {channel} needs user ids: --allow-from {channel}:ID")
        answers.allow_from[channel] = ids


def _provider(
    asker: Asker,
    language: Language,
    kind: str,
    existing: ProviderSettings | None,
    given: Given,
    secrets: Secrets,
    from_files: Mapping[str, str],
    answers: Answers,
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if kind == "openai":
        values["base_url"] = given.openai_base_url or asker.text(
            say(language, "wizard_base_url"),
            (existing.base_url if existing else None) or DEFAULT_OPENAI_URL,
            check=lambda url: None if re.fullmatch(r"https?://\S+", url) else "http(s)://…",
        )
    if kind in ("openai", "anthropic"):
        flag = given.openai_model if kind == "openai" else given.anthropic_model
        values["model"] = flag or asker.text(
            say(language, "wizard_model", kind=kind),
            (existing.model if existing else "") or DEFAULT_MODELS[kind],
        )
        ref = existing.api_key if existing else None
        slot = SecretSlot("api_key", ref.name if ref else f"{kind}_api_key")
        value = _secret(asker, answers, slot, ref, secrets, from_files, optional=kind == "openai")
        if value:
            answers.secrets[slot.name] = value
        if value or ref or kind == "anthropic":
            values["api_key"] = str(SecretRef(slot.name))
    if kind == "local":
        path = given.local_path or asker.text(
            say(language, "wizard_local_path"), (existing.path if existing else None) or ""
        )
        values["path"] = path or None
    return values


def _secret(
    asker: Asker,
    answers: Answers,
    slot: SecretSlot,
    ref: SecretRef | None,
    secrets: Secrets,
    from_files: Mapping[str, str],
    *,
    optional: bool = False,
) -> str:
    """The new value for a secret, or "" to keep what is stored (or to go without)."""
    language = answers.language
    name = ref.name if ref else slot.name
    if answers.secrets_backend == "env" and name not in from_files:
        asker.console.print(say(language, "wizard_secret_env", name=name, variable=env_var(name)))
        return ""
    if name in from_files:
        value = from_files[name]
        if problem := _shape_problem(language, slot, value):
            raise ConfigError(f"--secret-file {name}: {problem}")
        return value
    stored = _is_set(secrets, name)
    key = "wizard_secret_keep" if stored else ("wizard_secret_optional" if optional else "wizard_secret_new")
    return asker.secret(say(language, key, name=name), check=lambda v: _shape_problem(language, slot, v))


def _shape_problem(language: Language, slot: SecretSlot, value: str) -> str | None:
    if slot.pattern is None or slot.pattern.fullmatch(value):
        return None
    return say(language, "wizard_secret_shape", name=slot.name, shape=slot.shape)


def _is_set(secrets: Secrets, name: str) -> bool:
    try:
        secrets.get(name)
    except SecretError:
        return False
    return True


def _choice(
    asker: Asker, question: str, options: Sequence[Any], flag: str | None, default: Any, option: str
) -> Any:
    if flag is not None:
        if flag not in options:
            raise ConfigError(f"{option}: expected {' | '.join(options)}, got {flag!r}")
        return flag
    answer = asker.text(
        question,
        default,
        check=lambda a: (
            None if a in options else say(asker.language, "wizard_choice", options=", ".join(options))
        ),
    )
    return next(o for o in options if o == answer)


def _list(
    asker: Asker, question: str, options: Sequence[str], flag: str | None, default: Sequence[str], option: str
) -> list[str]:
    def problem(answer: str) -> str | None:
        bad = [item for item in _split(answer) if item not in options and item != "none"]
        return say(asker.language, "wizard_choice", options=", ".join(options)) if bad else None

    if flag is not None:
        if problem(flag):
            raise ConfigError(f"{option}: expected a comma-separated list of {', '.join(options)} (or none)")
        answer = flag
    else:
        answer = asker.text(question, ",".join(default) or "none", check=problem)
    return [item for item in dict.fromkeys(_split(answer)) if item != "none"]


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.replace(",", " ").split() if part.strip()]


def _allow_from_flags(flags: Sequence[str]) -> dict[str, list[str]]:
    ids: dict[str, list[str]] = {}
    for flag in flags:
        channel, _, user = flag.partition(":")
        if channel not in CHANNELS or not user:
            raise ConfigError(f"--allow-from {flag!r}: expected CHANNEL:USER_ID, e.g. telegram:123456789")
        ids.setdefault(channel, []).append(user)
    return ids


def _secrets_from_files(flags: Sequence[str]) -> dict[str, str]:
    """--secret-file NAME=PATH values: a file's first line ("-" = stdin, once)."""
    values: dict[str, str] = {}
    for flag in flags:
        name, _, where = flag.partition("=")
        name = name.strip().lower()
        if not re.fullmatch(r"[a-z0-9_]+", name) or not where:
            raise ConfigError(
                f"--secret-file {name or flag!r}: expected NAME=PATH, e.g. telegram_token=token.txt"
            )
        try:
            text = (
                sys.stdin.readline() if where == "-" else Path(where).expanduser().read_text(encoding="utf-8")
            )
        except OSError as e:
            raise ConfigError(f"--secret-file {name}: {where}: {e.strerror}") from None
        value = text.strip().splitlines()[0].strip() if text.strip() else ""
        if not value:
            raise ConfigError(f"--secret-file {name}: {where} is empty")
        values[name] = value
    return values


def _apply(document: config_document.Document, current: Config, answers: Answers) -> None:
    """Write the answers that differ from the current config into the document."""
    if answers.language != current.gateway.language:
        config_document.set_key(document, ("gateway",), "language", answers.language)
    if answers.secrets_backend != current.secrets.backend:
        config_document.set_key(document, ("secrets",), "backend", answers.secrets_backend)
    for channel in CHANNELS:
        settings = getattr(current.channels, channel)
        where = ("channels", channel)
        on = channel in answers.channels
        if on != settings.enabled:
            config_document.set_key(document, where, "enabled", on)
        if not on:
            continue
        for slot in CHANNEL_SECRETS[channel]:
            if getattr(settings, slot.key) is None:
                config_document.set_key(document, where, slot.key, str(SecretRef(slot.name)))
        if answers.dm_policy[channel] != settings.dm_policy:
            config_document.set_key(document, where, "dm_policy", answers.dm_policy[channel])
        ids = answers.allow_from.get(channel)
        if ids is not None and tuple(ids) != settings.allow_from:
            config_document.set_key(document, where, "allow_from", ids)
    config_document.set_providers(document, answers.providers)


def next_steps(language: Language) -> str:
    return say(language, "wizard_next")
