"""The assistant, wired and running: config → secrets → store → MBE client → model chain →
Pipeline and MemoryWriter, all owned by one async context manager and one task group.

`chat`, `doctor` and the daemon need the same parts built the same way; building them here
once keeps the order (and what each failure means) in one place:

- The model chain is built first, before anything starts: a setup without a usable model is
  refused in one short ConfigError that says how to configure one, before the engine is
  spawned or the database is touched.
- The MBE client is started but not waited for: the pipeline answers without memory while
  the engine starts (calls made while it starts wait within their own timeout). A caller that
  wants the first answer to have memory calls `wait_for_engine` with its own bound.
- The MemoryWriter runs in the assistant's task group. On leaving, the writes still queued
  get up to `drain_within` seconds to reach MBE before the engine is stopped; whatever is
  left stays in the durable queue and is written by the next run.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from mbe_gateway import paths
from mbe_gateway.config import Config, ProviderSettings
from mbe_gateway.errors import MBEError, SecretError
from mbe_gateway.llm import Chain, build_provider
from mbe_gateway.llm.factory import default_providers
from mbe_gateway.llm.local import BUNDLED_FILE
from mbe_gateway.mbe.servers import from_settings
from mbe_gateway.memory_writer import MemoryWriter
from mbe_gateway.pipeline import Pipeline
from mbe_gateway.secrets import Secrets
from mbe_gateway.store import Database, memory_queue, open_database
from mbe_gateway.texts import Language

if TYPE_CHECKING:
    import anyio.abc

    from mbe_gateway.mbe.client import MBEClient

log = logging.getLogger(__name__)

DRAIN_WITHIN = 5.0  # seconds the queued memory writes get on leaving, before the engine stops
_DRAIN_POLL = 0.01  # seconds between looks at the queue while draining


@dataclass(frozen=True)
class Assistant:
    """The running parts, for the one that drives them (the terminal chat, the daemon)."""

    config: Config
    language: Language
    db: Database
    mbe: MBEClient
    chain: Chain
    writer: MemoryWriter
    pipeline: Pipeline
    models: tuple[ProviderSettings, ...]  # the chain's providers, in order

    @property
    def model(self) -> str:
        """The first model in the chain, for a status line: "local SmolLM2-135M-Instruct.Q4_1"."""
        first = describe_model(self.models[0])
        others = len(self.models) - 1
        return f"{first} (+{others} fallback{'s' if others > 1 else ''})" if others else first

    async def wait_for_engine(self, timeout: float) -> MBEError | None:  # noqa: ASYNC109 (bounded by design)
        """Wait up to `timeout` seconds for MBE; None once it is ready, else why it is not."""
        try:
            await self.mbe.wait_ready(timeout)
        except MBEError as e:
            return e
        return None

    async def drain(self, within: float) -> int:
        """Let the writer empty the memory queue for up to `within` seconds; how many writes are left.

        It waits for the writer rather than flushing beside it: two flushes at once would
        send the same queued write twice. An engine that can never start is not waited for.
        """
        self.writer.nudge()
        with anyio.move_on_after(within):
            if await memory_queue.count(self.db):
                await self.wait_for_engine(within)  # at once when hopeless; the writer retries
            # The writer offers no "queue empty" event; a count is one cheap query per poll.
            while self.mbe.state == "ready" and await memory_queue.count(self.db):  # noqa: ASYNC110
                await anyio.sleep(_DRAIN_POLL)
        return await memory_queue.count(self.db)


def model_settings(config: Config) -> tuple[ProviderSettings, ...]:
    """The providers the chain will use: the configured ones, or the bundled local model.

    ConfigError (one line, naming the file and the install command) when there is neither.
    """
    return config.llm.providers or default_providers(config.path)


def build_model(models: Sequence[ProviderSettings], *, secrets: Secrets, mbe: MBEClient) -> Chain:
    """The failover chain over `models`; a missing API key is reported with the provider's name."""
    providers = []
    for settings in models:
        try:
            providers.append(build_provider(settings, secrets=secrets, mbe=mbe))
        except SecretError as e:
            raise SecretError(f"LLM provider {settings.name!r} needs its API key: {e}") from None
    return Chain(providers)


def describe_model(settings: ProviderSettings) -> str:
    """A provider as a person would name it: its kind and model ("openai gpt-4o-mini")."""
    if settings.kind == "local" and not settings.model:
        model = Path(settings.path).stem if settings.path else BUNDLED_FILE.removesuffix(".gguf")
    else:
        model = settings.model or settings.name
    return f"{settings.kind} {model}"


@asynccontextmanager
async def open_assistant(
    config: Config,
    *,
    language: Language | None = None,
    drain_within: float = DRAIN_WITHIN,
    db: Database | None = None,
    spawned: anyio.abc.Process | None = None,
) -> AsyncIterator[Assistant]:
    """Build and start every part; on leaving, drain the memory queue (bounded), then stop them.

    Raises ConfigError or SecretError, before starting anything, when no model can be used.
    The daemon, which starts its parts in its own order, passes the database it opened (left
    open on leaving) and the engine it spawned (`mbe.child.spawn`, taken over by the client).
    """
    # Here, not at the top: the MCP SDK behind the client is the slowest import of a start,
    # and the daemon starts its channels before it needs it.
    from mbe_gateway.mbe.client import MBEClient

    data = paths.data_dir()
    secrets = Secrets(config.secrets, data)
    models = model_settings(config)
    mbe = MBEClient(
        from_settings(config.mbe, secrets, data),
        call_timeout=config.mbe.call_timeout,
        connect_timeout=config.mbe.connect_timeout,
        home=data,
        spawned=spawned,
    )
    chain = build_model(models, secrets=secrets, mbe=mbe)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(chain.aclose)
        if db is None:
            db = await stack.enter_async_context(await open_database(paths.gateway_db()))
        await stack.enter_async_context(mbe)
        writer = MemoryWriter(db, mbe)
        chosen = language or config.gateway.language
        pipeline = Pipeline(
            db=db, mbe=mbe, llm=chain, settings=config.assistant, language=chosen, on_recorded=writer.nudge
        )
        assistant = Assistant(config, chosen, db, mbe, chain, writer, pipeline, models)
        # Entered by hand, like MBEClient's: an exception from the caller's block must reach
        # the caller as it is, not wrapped in the task group's ExceptionGroup.
        tg = anyio.create_task_group()
        await tg.__aenter__()
        try:
            tg.start_soon(writer.run, name="memory writer")
            yield assistant
        finally:
            with anyio.CancelScope(shield=True):
                left = await assistant.drain(drain_within)
            if left:
                log.warning(
                    "memory writes still queued on leaving; the next run writes them", extra={"queued": left}
                )
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)
