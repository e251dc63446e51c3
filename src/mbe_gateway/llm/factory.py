"""From `[[llm.providers]]` settings to a ready failover chain.

This is where config values become providers: secrets are read here (once, at start, so a
missing key is reported before the first message rather than in the middle of one), and
a setup with no provider at all falls back to the bundled local model when the `local`
extra is installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from mbe_gateway import paths
from mbe_gateway.config import ProviderSettings, SecretRef
from mbe_gateway.errors import ConfigError
from mbe_gateway.llm import anthropic, openai
from mbe_gateway.llm.base import ApiKey, Provider
from mbe_gateway.llm.chain import Chain
from mbe_gateway.llm.local import INSTALL_HINT, LocalProvider, bundled_model_path, local_model_available
from mbe_gateway.llm.mbe import GenerateClient, MBEProvider


class SecretSource(Protocol):
    """Anything that turns a secret reference into its value (mbe_gateway.secrets.Secrets)."""

    def get(self, ref: SecretRef) -> str: ...


def build_chain(
    providers: Sequence[ProviderSettings], *, secrets: SecretSource, mbe: GenerateClient | None = None
) -> Chain:
    """The chain for these settings, in their order; with none, the bundled local model if installed."""
    providers = providers or default_providers()
    return Chain([build_provider(p, secrets=secrets, mbe=mbe) for p in providers])


def default_providers(config_path: Path | None = None) -> tuple[ProviderSettings, ...]:
    """The chain when none is configured: the bundled local model, if its extra is installed.

    ConfigError, naming the config file to edit (`config_path`, else the default one), if not.
    """
    if not local_model_available():
        raise ConfigError(
            f"no LLM provider is configured: add an [[llm.providers]] section (kind, base_url, model) "
            f"to {config_path or paths.config_file()}, or install the local model: {INSTALL_HINT}"
        )
    return (ProviderSettings(kind="local", name="local"),)


def build_provider(
    settings: ProviderSettings, *, secrets: SecretSource, mbe: GenerateClient | None = None
) -> Provider:
    """One provider; ConfigError when its settings cannot work (MBE not connected, no model file)."""
    key = ApiKey(settings.api_key.name, secrets.get(settings.api_key)) if settings.api_key else None
    match settings.kind:
        case "openai":
            return openai.OpenAIProvider(
                settings.name,
                settings.model,
                base_url=settings.base_url or openai.DEFAULT_BASE_URL,
                api_key=key,
                timeout=settings.timeout,
                temperature=settings.temperature,
                max_tokens=settings.max_tokens,
            )
        case "anthropic":
            return anthropic.AnthropicProvider(
                settings.name,
                settings.model,
                base_url=settings.base_url or anthropic.DEFAULT_BASE_URL,
                api_key=key,
                timeout=settings.timeout,
                temperature=settings.temperature,
                max_tokens=settings.max_tokens,
            )
        case "mbe":
            if mbe is None:
                raise ConfigError(
                    f'LLM provider {settings.name!r}: kind = "mbe" needs a connected MBE server'
                )
            return MBEProvider(mbe, name=settings.name, temperature=settings.temperature)
        case "local":
            return _local(settings)


def _local(settings: ProviderSettings) -> LocalProvider:
    """A local model, checked now: a wrong path should stop the start, not fail every message."""
    path = Path(settings.path).expanduser() if settings.path else bundled_model_path()
    if path is None:
        raise ConfigError(
            f"LLM provider {settings.name!r}: the bundled model is not installed ({INSTALL_HINT})"
        )
    if not path.is_file():
        raise ConfigError(f"LLM provider {settings.name!r}: no model file at {path} (path = a GGUF file)")
    return LocalProvider(
        settings.name,
        path,
        model=settings.model,
        context_window=settings.context_window,
        temperature=settings.temperature,
        max_tokens=settings.max_tokens,
    )
