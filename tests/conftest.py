"""Fixtures shared across the suite: an isolated home for each test, and the anyio backend.

Every test runs with its own MBE_GATEWAY_HOME and MBE_GATEWAY_CONFIG under tmp_path, so no
test can read or write the developer's real config, data or secrets.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from mbe_gateway.config import AssistantSettings
from mbe_gateway.llm import Chain, ChatMessage, ScriptedProvider
from mbe_gateway.mbe import Backoff, MBEClient, embedded_engine
from mbe_gateway.memory_writer import MemoryWriter
from mbe_gateway.pipeline import Pipeline
from mbe_gateway.store import Database, open_database
from mbe_gateway.texts import Language


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private data dir and config path for this test (the dir exists, the config does not)."""
    data = tmp_path / "home"
    data.mkdir()
    monkeypatch.setenv("MBE_GATEWAY_HOME", str(data))
    monkeypatch.setenv("MBE_GATEWAY_CONFIG", str(tmp_path / "config.toml"))
    # Never the developer's real keyring: no keyring at all unless a test chooses one (and any
    # file-based keyring a test chooses keeps its file under tmp_path).
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    for name in [n for n in os.environ if n.startswith("MBE_GATEWAY_SECRET_")]:
        monkeypatch.delenv(name)
    return data


def echo(messages: Sequence[ChatMessage]) -> str:
    """A scripted model that repeats the user: replies are predictable, prompts inspectable."""
    return f"You said: {messages[-1].content}"


@dataclass
class Rig:
    db: Database
    mbe: MBEClient
    llm: ScriptedProvider
    writer: MemoryWriter
    pipeline: Pipeline


@pytest.fixture
async def rig(home: Path) -> AsyncIterator[Callable[..., Rig]]:
    """Builds a pipeline on the real engine; call it with the provider and settings wanted."""
    async with await open_database(home / "gateway.sqlite3") as db:
        server = embedded_engine(home / "engine.sqlite3")
        async with MBEClient(server, home=home, backoff=Backoff(base=1.5, jitter=0)) as mbe:
            await mbe.wait_ready(30)

            def build(
                llm: ScriptedProvider | None = None,
                language: Language = "en",
                **settings: object,
            ) -> Rig:
                provider = llm or ScriptedProvider(echo)
                writer = MemoryWriter(db, mbe)
                pipeline = Pipeline(
                    db=db,
                    mbe=mbe,
                    llm=Chain([provider]),
                    settings=AssistantSettings(**settings),  # type: ignore[arg-type]
                    language=language,
                    on_recorded=writer.nudge,
                )
                return Rig(db, mbe, provider, writer, pipeline)

            yield build
