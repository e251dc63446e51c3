"""`mbe-gateway chat`: the assistant in the terminal, the pipeline running in this process.

The terminal is one more channel ("cli") whose one chat is the OS user, so what is said here
is remembered across runs, like a DM on any platform. Commands are the channels' own
(/start /help /stats /memories /reset); /quit, /exit, Ctrl-D and Ctrl-C at the prompt leave,
and Ctrl-C while an answer streams stops that answer (nothing of it is recorded). Leaving
always goes through `open_assistant`'s exit, so queued memory writes reach MBE first.

Two modes:

- interactive: replies stream as the model writes them. On a terminal they are drawn as
  Markdown (rich.live), the newest lines while streaming and the whole reply at the end;
  to a pipe they are plain text. Stdin may be a pipe too (no prompt then): lines are
  answered one by one until its end or /quit, which is what scripts and tests drive.
- `--message TEXT`: one answer on stdout (decorations included unless `plain`), exit 0. When
  no model can answer, stdout stays empty and the reason is one line on stderr, exit 1: a
  script should not take the apology meant for a chat user for an answer.
"""

from __future__ import annotations

import getpass
import signal
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from typing import IO, TYPE_CHECKING, Final

import anyio
import anyio.from_thread
import anyio.lowlevel
from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.markdown import Markdown
from rich.segment import Segment
from rich.text import Text

from mbe_gateway.assistant import DRAIN_WITHIN, Assistant, open_assistant
from mbe_gateway.errors import GatewayError, ProviderFailed
from mbe_gateway.pipeline import Reply, Request

if TYPE_CHECKING:
    from mbe_gateway.config import Config
    from mbe_gateway.texts import Language

CHANNEL: Final = "cli"
ENGINE_WAIT: Final = 10.0  # seconds to wait for MBE before the first answer, so it has memory
QUIT: Final = frozenset({"/quit", "/exit"})
PROMPT: Final = "› "
_REDRAW_EVERY: Final = 1 / 20  # seconds between redraws of a streaming reply


def run(
    config: Config, *, message: str | None = None, plain: bool = False, language: Language | None = None
) -> int:
    """Chat (or answer `message` once) and return the exit code."""
    if message is not None:
        return anyio.run(partial(_once, config, message, plain=plain, language=language))
    return anyio.run(partial(_interactive, config, language=language))


def request(text: str) -> Request:
    """A message from the person at this terminal: one session per OS user, kept across runs."""
    user = _user()
    return Request(channel=CHANNEL, chat_id=user, sender_id=user, texts=(text,), sender_name=user)


def _user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        return "me"


# --- one message --------------------------------------------------------------------------


async def _once(config: Config, text: str, *, plain: bool, language: Language | None) -> int:
    errors = Console(stderr=True, highlight=False, markup=False, soft_wrap=True)
    async with open_assistant(config, language=language) as assistant:
        await assistant.wait_for_engine(min(ENGINE_WAIT, config.mbe.connect_timeout))
        out = _PlainStream(sys.stdout)
        try:
            reply = await assistant.pipeline.answer(request(text), on_delta=out.write)
        except ProviderFailed as e:
            out.end()
            errors.print(Text(f"error: the answer broke off: {e}", style="bold red"))
            return 1
        if "llm" in reply.degraded:
            errors.print(Text(f"error: {_why_no_answer(assistant)}", style="bold red"))
            return 1
        if out.started:
            out.end()
            if not plain and (decorations := _decorations(reply)):
                sys.stdout.write(f"\n{decorations}\n")
        else:  # a command's answer or a refusal: not streamed
            sys.stdout.write((reply.body if plain else reply.text) + "\n")
        sys.stdout.flush()
        if "mbe" in reply.degraded:
            errors.print(Text("note: answered without memory: the MBE engine is not reachable", style="dim"))
        with anyio.CancelScope(shield=True):
            left = await assistant.drain(DRAIN_WITHIN)
        if left:
            errors.print(Text(f"note: {_queued(left)}", style="dim"))
    return 0


class _PlainStream:
    """Deltas written as they arrive, minus the leading and trailing whitespace the pipeline
    strips from the answer, so what is printed is exactly `reply.body`."""

    def __init__(self, file: IO[str]) -> None:
        self.file = file
        self.started = False
        self._held = ""  # whitespace that is printed only if more text follows it

    async def write(self, delta: str) -> None:
        text = self._held + delta
        if not self.started:
            text = text.lstrip()
        shown = text.rstrip()
        self._held = text[len(shown) :]
        if shown:
            self.started = True
            self.file.write(shown)
            self.file.flush()

    def end(self) -> None:
        if self.started:
            self.file.write("\n")
            self.file.flush()


# --- interactive --------------------------------------------------------------------------


@dataclass
class _Interrupts:
    """What Ctrl-C cancels: the answer being written if there is one, else the whole chat."""

    chat: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    answer: anyio.CancelScope | None = None

    async def watch(self, signals: AsyncIterator[signal.Signals]) -> None:
        async for _ in signals:
            if self.answer is not None:
                self.answer.cancel()
            else:
                self.chat.cancel()


async def _interactive(config: Config, *, language: Language | None) -> int:
    console = Console(highlight=False)
    console.soft_wrap = not console.is_terminal  # a pipe gets lines as they were, not cut at 80
    interrupts = _Interrupts()
    failure: GatewayError | None = None
    with _terminal_restored(), anyio.open_signal_receiver(signal.SIGINT) as signals:
        async with anyio.create_task_group() as tg:
            tg.start_soon(interrupts.watch, signals, name="Ctrl-C")
            try:
                async with open_assistant(config, language=language) as assistant:
                    with interrupts.chat:
                        await _converse(assistant, console, interrupts)
                    if interrupts.chat.cancel_called and console.is_terminal:
                        console.print()  # Ctrl-C left the prompt's line unfinished
                    with anyio.CancelScope(shield=True):
                        left = await assistant.drain(DRAIN_WITHIN)
                    if left:
                        console.print(Text(_queued(left), style="dim"))
            except GatewayError as e:  # raised outside the task group, so it reaches the CLI unwrapped
                failure = e
            finally:
                tg.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return 0


async def _converse(assistant: Assistant, console: Console, interrupts: _Interrupts) -> None:
    interactive = sys.stdin.isatty()
    if interactive:
        with suppress(ImportError):  # for its effect: input() gets line editing and history
            import readline  # noqa: F401

        console.print(Text("starting the memory engine…", style="dim"))
    problem = await assistant.wait_for_engine(min(ENGINE_WAIT, assistant.config.mbe.connect_timeout))
    help_hint = "/help for commands, /quit to leave"
    if problem is None:
        console.print(Text(f"engine ready · model: {assistant.model} · {help_hint}", style="dim"))
    else:
        console.print(
            Text(
                f"engine not ready ({problem}) · answering without memory · model: {assistant.model}",
                style="yellow",
            )
        )
    while True:
        line = await read_line(PROMPT if interactive else "")
        if line is None:  # Ctrl-D, or the end of piped input
            if interactive:
                console.print()
            return
        text = line.strip()
        if not text:
            continue
        if text.lower() in QUIT:
            return
        with anyio.CancelScope() as scope:
            interrupts.answer = scope
            await _answer(assistant, console, text)
        interrupts.answer = None
        if scope.cancelled_caught:
            console.print(Text("⏹ stopped", style="dim"))
        if interactive:
            console.print()


async def _answer(assistant: Assistant, console: Console, text: str) -> None:
    view = _ReplyView(console)
    try:
        with view:
            reply = await assistant.pipeline.answer(request(text), on_delta=view.add)
    except ProviderFailed as e:
        console.print(Text(f"the answer broke off: {e}", style="red"))
        return
    if not view.streamed:
        style = "yellow" if "llm" in reply.degraded else ""
        console.print(Text(reply.text, style=style))
    elif decorations := _decorations(reply):
        console.print(Text(decorations, style="dim"))
    if "llm" in reply.degraded:
        console.print(Text(_why_no_answer(assistant), style="dim"))
    if "mbe" in reply.degraded:
        console.print(Text("answered without memory: the MBE engine is not reachable", style="dim"))


class _ReplyView:
    """A reply as it streams: live Markdown on a terminal, plain text anywhere else."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.streamed = False
        self._reply = _StreamedMarkdown()
        self._live: Live | None = None
        self._plain = _PlainStream(console.file)
        self._drawn_at = 0.0

    def __enter__(self) -> _ReplyView:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._live is not None:
            self._reply.streaming = False
            self._live.stop()  # draws the whole reply, not only its tail
        elif self.streamed:
            self._plain.end()

    async def add(self, delta: str) -> None:
        if not self.console.is_terminal:
            await self._plain.write(delta)
            self.streamed = self._plain.started
            return
        self._reply.text += delta
        if not self._reply.text.strip():
            return
        self.streamed = True
        now = anyio.current_time()
        if self._live is None:
            # No auto-refresh: that would be a thread; we redraw as deltas arrive.
            self._live = Live(
                self._reply,
                console=self.console,
                auto_refresh=False,
                vertical_overflow="visible",
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._live.start(refresh=True)
            self._drawn_at = now
        elif now - self._drawn_at >= _REDRAW_EVERY:
            self._live.refresh()
            self._drawn_at = now


class _StreamedMarkdown:
    """The reply so far as Markdown. While it streams, only the lines that fit on the screen
    are drawn, the newest ones: rich.live cannot redraw what has scrolled off the screen."""

    def __init__(self) -> None:
        self.text = ""
        self.streaming = True

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        markdown = Markdown(self.text.strip(), justify="default")  # no trailing spaces to copy
        if not self.streaming:
            yield markdown
            return
        lines = console.render_lines(markdown, options, pad=False)
        for line in lines[-max(1, console.size.height - 2) :]:
            yield from line
            yield Segment.line()


async def read_line(prompt: str) -> str | None:
    """One line from stdin (None at its end), read without blocking the event loop.

    Reading a line blocks (on a terminal, in readline's line editor), so it runs in a
    thread, the only one the chat starts. It is a daemon thread of its own rather than an
    anyio worker (`to_thread.run_sync`), because leaving with Ctrl-C abandons a half-typed
    line, and a worker thread, which the interpreter joins at exit, would keep the process
    alive until the user pressed Enter.
    """
    token = anyio.lowlevel.current_token()
    done = anyio.Event()
    got: list[str | None] = []
    failed: list[BaseException] = []

    def read() -> None:
        try:
            got.append(input(prompt))
        except EOFError:
            got.append(None)
        except BaseException as e:  # handed to the event loop's side, raised there
            failed.append(e)
        with suppress(anyio.RunFinishedError):  # the chat ended while this line was being typed
            anyio.from_thread.run_sync(done.set, token=token)

    threading.Thread(target=read, name="terminal input", daemon=True).start()
    await done.wait()
    if failed:
        raise failed[0]
    return got[0]


@contextmanager
def _terminal_restored() -> Iterator[None]:
    """Put the terminal's modes back on leaving: readline changes them while it reads, and
    leaving with Ctrl-C can leave it mid-read (no echo in the user's shell otherwise)."""
    if not sys.stdin.isatty():
        yield
        return
    import termios

    saved = termios.tcgetattr(sys.stdin.fileno())
    try:
        yield
    finally:
        termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)


# --- shared --------------------------------------------------------------------------------


def _decorations(reply: Reply) -> str:
    """The lines the pipeline added under the answer ("new to you", "answered by")."""
    if reply.command is not None or not reply.text.startswith(reply.body):
        return ""
    return reply.text[len(reply.body) :].strip("\n")


def _why_no_answer(assistant: Assistant) -> str:
    reasons = [s.last_error for s in assistant.chain.status() if s.last_error]
    return "no LLM provider could answer" + (f": {'; '.join(reasons)}" if reasons else "")


def _queued(count: int) -> str:
    writes = "memory write is" if count == 1 else "memory writes are"
    return f"{count} {writes} still queued (MBE is not reachable); the next run writes them"
