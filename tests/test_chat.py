"""`mbe-gateway chat` as a user runs it: the real console script, the real engine child, and an
OpenAI-compatible fake model on loopback (the one thing across a network).

Each run is a fresh process, so what one run remembers in the next went through the memory
queue, MBE and the engine's database on disk.
"""

from __future__ import annotations

import fcntl
import getpass
import os
import pty
import struct
import subprocess
import sys
import termios
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest

from fake_llm_servers import Answer, FakeLLM, serve_fake_llm, unused_port
from mbe_gateway.store import history, memory_queue, open_database, sessions

SCRIPT = str(Path(sys.executable).with_name("mbe-gateway"))
# Run the CLI with llama-cpp-python made unimportable (Python's own way to block an import:
# a None entry in sys.modules), as on a machine without the `local` extra.
WITHOUT_LLAMA = (
    "import sys; sys.modules['llama_cpp'] = None; sys.argv[0] = 'mbe-gateway'; "
    "from mbe_gateway.cli import main; main()"
)


@pytest.fixture
def env(home: Path) -> dict[str, str]:
    """The subprocess environment: the isolated home (from `home`) and no usable keyring."""
    return {**os.environ, "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring", "COLUMNS": "200"}


def provider_config(path: Path, base_url: str, *, api_key: str | None = None) -> Path:
    key = f'api_key = "secret:{api_key}"\n' if api_key else ""
    path.write_text(
        f'[[llm.providers]]\nkind = "openai"\nname = "fake"\nmodel = "m"\nbase_url = "{base_url}"\n{key}'
    )
    return path


async def chat(
    env: dict[str, str], *args: str, stdin: str | None = None, command: Sequence[str] = (SCRIPT,)
) -> tuple[int, str, str]:
    done = await anyio.run_process(
        [*command, *args], input=stdin.encode() if stdin is not None else None, env=env, check=False
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def system_prompt(fake: FakeLLM, index: int) -> str:
    messages = fake.requests[index].body["messages"]
    assert messages[0]["role"] == "system"
    return str(messages[0]["content"])


@pytest.mark.anyio
async def test_a_message_is_answered_on_stdout_and_the_next_run_remembers_it(
    env: dict[str, str], tmp_path: Path
) -> None:
    async with serve_fake_llm() as fake:
        config = provider_config(tmp_path / "config.toml", fake.openai_url)
        fake.queue(Answer("Six minutes for a soft yolk."), Answer("Six minutes, as I said."))
        code, out, err = await chat(
            env,
            "--config",
            str(config),
            "chat",
            "--message",
            "How long should I boil an egg for a soft yolk?",
        )
        assert (code, err) == (0, "")
        assert out.startswith("Six minutes for a soft yolk.\n\n💡 New to you (surprise 1.00)\n\n")
        assert out.endswith("🤖 Answered by our expert: Chef\n")
        assert fake.requests[0].body["stream"] is True

        code, out, err = await chat(
            env,
            "--config",
            str(config),
            "chat",
            "--plain",
            "--language",
            "zh",
            "-m",
            "So how long do I boil the egg?",
        )
        assert (code, out, err) == (0, "Six minutes, as I said.\n", "")
        remembered = system_prompt(fake, 1)
        assert remembered.startswith("你是运行在用户自己机器上的个人助理")
        assert "你记得的关于这位用户的过往信息" in remembered
        assert (
            "用户说:How long should I boil an egg for a soft yolk? —— 你回答:Six minutes for a soft yolk."
            in remembered
        )


def test_a_language_other_than_en_or_zh_is_a_usage_error(env: dict[str, str]) -> None:
    done = subprocess.run(
        [SCRIPT, "chat", "--language", "fr", "-m", "bonjour"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "expected en or zh" in done.stderr
    assert done.stdout == ""


@pytest.mark.anyio
async def test_a_provider_whose_key_is_missing_is_one_line_exit_1_before_anything_starts(
    env: dict[str, str], home: Path, tmp_path: Path
) -> None:
    config = provider_config(tmp_path / "config.toml", "http://127.0.0.1:9/v1", api_key="openai_key")
    code, out, err = await chat(env, "--config", str(config), "chat", "-m", "hello?")
    assert (code, out) == (1, "")
    assert err.startswith("error: LLM provider 'fake' needs its API key: secret openai_key is not set")
    assert "MBE_GATEWAY_SECRET_OPENAI_KEY" in err
    assert len(err.strip().splitlines()) == 1, err
    assert not (home / "gateway.sqlite3").exists()
    assert not (home / "engine.sqlite3").exists()


@pytest.mark.anyio
async def test_with_no_provider_and_no_local_model_one_line_says_how_to_configure_one(
    env: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "empty.toml"
    config.write_text('[gateway]\nlanguage = "en"\n')
    code, out, err = await chat(
        env, "--config", str(config), "chat", "-m", "hello?", command=(sys.executable, "-c", WITHOUT_LLAMA)
    )
    assert (code, out) == (1, "")
    assert err.startswith("error: no LLM provider is configured: add an [[llm.providers]] section")
    assert str(config) in err
    assert "pipx install 'mbe-gateway[local]'" in err
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.anyio
async def test_when_no_provider_can_answer_a_script_gets_the_reason_not_the_apology(
    env: dict[str, str], tmp_path: Path
) -> None:
    config = provider_config(tmp_path / "config.toml", f"http://127.0.0.1:{unused_port()}/v1")
    code, out, err = await chat(env, "--config", str(config), "chat", "-m", "hello?")
    assert (code, out) == (1, "")
    assert err.startswith("error: no LLM provider could answer: fake: could not connect to http://127.0.0.1:")
    assert "Sorry" not in err
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.anyio
async def test_piped_lines_are_answered_in_order_with_commands_until_quit(
    env: dict[str, str], home: Path, tmp_path: Path
) -> None:
    async with serve_fake_llm() as fake:
        config = provider_config(tmp_path / "config.toml", fake.openai_url)
        fake.queue(Answer("Knead it for ten minutes."), Answer("Rest it for half an hour."))
        lines = "How do I make fresh pasta dough?\n\n/stats\nAnd then?\n/quit\nthis is never read\n"
        code, out, err = await chat(env, "--config", str(config), "chat", stdin=lines)
    assert (code, err) == (0, "")
    assert out.startswith("engine ready · model: openai m · /help for commands, /quit to leave\n")
    assert out.index("Knead it for ten minutes.") < out.index("📊 Your stats") < out.index("Rest it for half")
    assert "💬 Messages in the last 30 days: 1" in out
    assert len(fake.requests) == 2
    assert "never read" not in str(fake.requests[-1].body)
    async with await open_database(home / "gateway.sqlite3") as db:
        assert await memory_queue.count(db) == 0  # both exchanges reached MBE before the exit


async def read_until(fd: int, seen: bytearray, wanted: str, timeout: float = 30) -> str:
    """Read the terminal's output until `wanted` appears (after what was already consumed)."""
    with anyio.fail_after(timeout):
        while wanted.encode() not in seen:
            await anyio.wait_readable(fd)
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                chunk = b""
            if not chunk:
                raise AssertionError(f"the chat ended before {wanted!r}: {seen.decode(errors='replace')}")
            seen += chunk
    at = seen.index(wanted.encode()) + len(wanted)
    before = seen[:at].decode(errors="replace")
    del seen[:at]
    return before


@pytest.mark.anyio
async def test_in_a_terminal_ctrl_c_stops_a_streaming_answer_and_at_the_prompt_leaves(
    env: dict[str, str], home: Path, tmp_path: Path
) -> None:
    async with serve_fake_llm() as fake:
        config = provider_config(tmp_path / "config.toml", fake.openai_url)
        words = " ".join(f"word{i}" for i in range(200))
        fake.queue(Answer(f"Streaming {words} never finished.", chunk_delay=0.05), Answer("A **short** one."))
        pid, fd = pty.fork()
        if pid == 0:  # the child: becomes the chat, with the pty as its controlling terminal
            os.execve(SCRIPT, [SCRIPT, "--config", str(config), "chat"], {**env, "TERM": "xterm"})
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        seen = bytearray()
        try:
            assert "engine ready" in await read_until(fd, seen, "› ")
            os.write(fd, b"Tell me a long story\r")
            await read_until(fd, seen, "word3")  # the answer shows while it is still being written
            os.write(fd, b"\x03")
            stopped = await read_until(fd, seen, "⏹ stopped")
            assert "never finished" not in stopped
            await read_until(fd, seen, "› ")
            os.write(fd, b"And a short one?\r")
            answered = await read_until(fd, seen, "› ")
            assert "short" in answered
            assert "**" not in answered  # drawn as Markdown
            os.write(fd, b"\x03")
            with anyio.fail_after(20):
                while (ended := os.waitpid(pid, os.WNOHANG))[0] == 0:
                    await anyio.sleep(0.05)
        finally:
            os.close(fd)
    assert os.waitstatus_to_exitcode(ended[1]) == 0
    async with await open_database(home / "gateway.sqlite3") as db:
        session = await sessions.get_or_create(db, "cli", getpass.getuser())
        said = [(m.role, m.text) for m in await history.recent(db, session.id)]
        assert said == [("user", "And a short one?"), ("assistant", "A **short** one.")]
        assert await memory_queue.count(db) == 0
