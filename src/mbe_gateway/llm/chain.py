"""The failover chain: providers tried in order, with a cooldown for the ones that fail.

A provider that fails is skipped for a while, so one dead server costs one timeout, not
one per message. The cooldown doubles with each failure in a row (5 s, 10 s, 20 s, …, up
to `max_cooldown`) and is never shorter than the provider's own Retry-After; one success
clears it. When every provider failed or is cooling down, `AllProvidersFailed` carries a
summary (and the soonest time worth retrying) for the pipeline to turn into an apology.

Streaming fails over only before the first delta. Once text has reached the caller, a
failure is raised as it is (`ProviderFailed`): continuing with another model would splice
two different answers into one message without the user knowing. The caller keeps what it
showed and can say the answer broke off.

The chain is itself a `Provider`, so anything that takes one can take a chain.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass

from mbe_gateway.errors import AllProvidersFailed, ProviderFailed
from mbe_gateway.llm.base import ChatMessage, Completion, Provider

log = logging.getLogger("mbe_gateway.llm")

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class ProviderStatus:
    """One provider's health as the chain sees it, for `doctor` and the control plane."""

    name: str
    consecutive_failures: int
    cooling_down_for: float  # seconds; 0 when the provider is tried
    last_error: str


@dataclass(slots=True)
class _Health:
    failures: int = 0
    ready_at: float = 0.0
    last_error: str = ""


class Chain:
    """Tries `providers` in order; see the module docstring for the failover rules."""

    def __init__(
        self,
        providers: Sequence[Provider],
        *,
        clock: Clock = time.monotonic,
        base_cooldown: float = 5.0,
        max_cooldown: float = 300.0,
        name: str = "chain",
    ) -> None:
        if not providers:
            raise ValueError("a chain needs at least one provider")
        names = [p.name for p in providers]
        if len(set(names)) != len(names):
            raise ValueError(f"provider names must be unique in a chain, got {names}")
        self.name = name
        self.providers: tuple[Provider, ...] = tuple(providers)
        self._clock = clock
        self._base_cooldown = base_cooldown
        self._max_cooldown = max_cooldown
        self._health = {p.name: _Health() for p in providers}

    def __repr__(self) -> str:
        return f"Chain({[p.name for p in self.providers]!r})"

    def status(self) -> list[ProviderStatus]:
        now = self._clock()
        return [
            ProviderStatus(
                name=p.name,
                consecutive_failures=self._health[p.name].failures,
                cooling_down_for=max(0.0, self._health[p.name].ready_at - now),
                last_error=self._health[p.name].last_error,
            )
            for p in self.providers
        ]

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> Completion:
        failures: list[str] = []
        for provider in self.providers:
            if self._cooling(provider, failures):
                continue
            try:
                completion = await provider.complete(messages, temperature=temperature, max_tokens=max_tokens)
            except Exception as exc:
                self._failed(provider, exc, failures)
                continue
            self._succeeded(provider)
            return completion
        raise self._exhausted(failures)

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        on_provider: Callable[[str], None] | None = None,
    ) -> AsyncGenerator[str, None]:
        """Deltas from the first provider that can stream; `on_provider` hears its name once,
        before its first delta (a stream's text comes from one provider only)."""
        failures: list[str] = []
        for provider in self.providers:
            if self._cooling(provider, failures):
                continue
            async with aclosing(
                provider.stream(messages, temperature=temperature, max_tokens=max_tokens)
            ) as deltas:
                try:
                    first = await anext(deltas)
                except StopAsyncIteration:
                    self._failed(
                        provider,
                        ProviderFailed(f"{provider.name}: streamed nothing", provider=provider.name),
                        failures,
                    )
                    continue
                except Exception as exc:
                    self._failed(provider, exc, failures)
                    continue
                if on_provider is not None:
                    on_provider(provider.name)
                yield first
                try:
                    async for delta in deltas:
                        yield delta
                except Exception as exc:
                    self._failed(provider, exc, failures, midstream=True)
                    raise
            self._succeeded(provider)
            return
        raise self._exhausted(failures)

    async def aclose(self) -> None:
        for provider in self.providers:
            await provider.aclose()

    # --- health -----------------------------------------------------------------------------

    def _cooling(self, provider: Provider, failures: list[str]) -> bool:
        left = self._health[provider.name].ready_at - self._clock()
        if left <= 0:
            return False
        failures.append(f"{provider.name} is cooling down for {left:.0f} s more")
        log.debug("LLM provider skipped while cooling down", extra={"llm_provider": provider.name})
        return True

    def _failed(
        self, provider: Provider, exc: Exception, failures: list[str], *, midstream: bool = False
    ) -> None:
        health = self._health[provider.name]
        health.failures += 1
        own = min(self._max_cooldown, self._base_cooldown * 2 ** (health.failures - 1))
        retry_after = exc.retry_after if isinstance(exc, ProviderFailed) else None
        cooldown = max(own, retry_after or 0.0)
        health.ready_at = self._clock() + cooldown
        reason = (
            str(exc)
            if isinstance(exc, ProviderFailed)
            else f"{provider.name}: unexpected {type(exc).__name__}"
        )
        health.last_error = reason
        failures.append(reason)
        fields = {
            "llm_provider": provider.name,
            "llm_error": reason,
            "consecutive_failures": health.failures,
            "cooldown_s": round(cooldown, 3),
            "retry_after_s": retry_after,
            "midstream": midstream,
        }
        message = "LLM provider failed mid-answer; not failing over" if midstream else "LLM provider failed"
        if isinstance(exc, ProviderFailed):
            log.warning(message, extra=fields)
        else:
            log.error(message, extra=fields, exc_info=exc)

    def _succeeded(self, provider: Provider) -> None:
        health = self._health[provider.name]
        if health.failures:
            log.info("LLM provider recovered", extra={"llm_provider": provider.name})
        health.failures = 0
        health.ready_at = 0.0

    def _exhausted(self, failures: list[str]) -> AllProvidersFailed:
        now = self._clock()
        retry_in = max(0.0, min(h.ready_at for h in self._health.values()) - now)
        return AllProvidersFailed(
            "no LLM provider could answer: " + "; ".join(failures),
            attempts=tuple(failures),
            retry_in=retry_in,
        )
