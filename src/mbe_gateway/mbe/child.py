"""An MBE server as our child: its environment, its stderr file, starting and stopping it.

Apart from the MCP transport (`stdio`) so that it costs no MCP SDK import: the daemon
spawns its engine first thing, and the engine starts up (its own imports, its database)
on the other core while the daemon loads its chat platforms' libraries.
"""

from __future__ import annotations

import logging
import os
import signal
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import anyio
import anyio.abc

from mbe_gateway.errors import MBEUnavailable
from mbe_gateway.mbe.servers import StdioServer
from mbe_gateway.paths import ENV_HOME

log = logging.getLogger(__name__)

# What every program needs (the SDK's own list), plus locale, temp dir and time zone, plus
# what lets a Python server find its packages when it is run from a checkout or a venv.
ESSENTIAL_ENV: Final = (
    "HOME",
    "LOGNAME",
    "PATH",
    "SHELL",
    "TERM",
    "USER",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TMPDIR",
    "TZ",
    "PYTHONPATH",
    "PYTHONHOME",
    "VIRTUAL_ENV",
)

ERRLOG_ROTATE_BYTES: Final = 1_000_000
STDIN_CLOSE_GRACE: Final = 2.0  # the server's time to exit on its own once its stdin closes
SIGTERM_GRACE: Final = 2.0  # then SIGTERM to the group, and this long before SIGKILL
_POLL: Final = 0.01


def default_errlog(home: Path) -> Path:
    """Where the child's stderr goes unless told otherwise: logs/mbe-server.log in the data dir."""
    return home / "logs" / "mbe-server.log"


def child_environment(server: StdioServer, *, home: Path) -> dict[str, str]:
    """The child's whole environment: essentials, MBE_GATEWAY_HOME, `pass_env`, then `env`."""
    env: dict[str, str] = {}
    for name in (*ESSENTIAL_ENV, *server.pass_env):
        value = os.environ.get(name)
        if value is not None and not value.startswith("()"):  # skip exported shell functions
            env[name] = value
    env[ENV_HOME] = str(home)
    env.update(server.env)
    return env


def open_errlog(path: Path, server: StdioServer) -> int:
    """Open the child's stderr file for appending, rotating it once it grows past ~1 MB.

    A marker line per start lets a reader tell one run's traceback from the next one's.
    Returns a raw descriptor: the child inherits its own copy, ours is closed right after.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with suppress(FileNotFoundError):
        if path.stat().st_size > ERRLOG_ROTATE_BYTES:
            path.replace(path.with_name(path.name + ".1"))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    os.write(fd, f"--- {stamp} starting {server.name} ---\n".encode())
    return fd


async def spawn(server: StdioServer, *, errlog: Path, home: Path) -> anyio.abc.Process:
    """Start `server` in its own session (so its whole process group can be stopped), with
    the environment above and its stderr appended to `errlog`; MBEUnavailable if it cannot."""
    env = child_environment(server, home=home)
    fd = open_errlog(errlog, server)
    try:
        process = await anyio.open_process(
            list(server.command), env=env, stderr=fd, cwd=server.cwd, start_new_session=True
        )
    except OSError as exc:
        raise MBEUnavailable(
            f"cannot start the MBE server {server.command[0]!r}: {exc.strerror or exc}; "
            "check [mbe] command in the config (is MBE installed?)"
        ) from exc
    finally:
        os.close(fd)
    log.debug(
        "MBE server spawned", extra={"server": server.name, "pid": process.pid, "env_names": sorted(env)}
    )
    return process


async def stop(process: anyio.abc.Process) -> None:
    """Stop a child and its process group: close stdin, wait, SIGTERM, wait, SIGKILL.

    Anything left in the group once the child itself has exited is signalled at once: it
    would otherwise outlive us as an orphan. Shielded and bounded, so a cancelled caller
    can neither skip this nor hang in it.
    """
    with anyio.CancelScope(shield=True):
        if process.stdin is not None:
            with suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                await process.stdin.aclose()
        with anyio.move_on_after(STDIN_CLOSE_GRACE):
            await process.wait()
        for signum in (signal.SIGTERM, signal.SIGKILL):
            if process.returncode is not None and not _group_alive(process.pid):
                break
            log.info(
                "stopping the MBE server with %s",
                signal.Signals(signum).name,
                extra={"pid": process.pid, "exited": process.returncode is not None},
            )
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signum)
            await _wait_gone(process, SIGTERM_GRACE)
        with anyio.move_on_after(SIGTERM_GRACE):  # only a process stuck in the kernel outlives SIGKILL
            await process.aclose()


async def _wait_gone(process: anyio.abc.Process, grace: float) -> None:
    """Wait up to `grace` s until the child has exited and nothing is left in its process group."""
    with anyio.move_on_after(grace):
        await process.wait()
        while _group_alive(process.pid):  # noqa: ASYNC110 (no event tells when a process group empties)
            await anyio.sleep(_POLL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
