"""The `mbe-gateway` command: parse, call the part that does the work, print the outcome.

No logic of its own lives here. Imports are lazy (inside each command), so `--help` pays
only for typer (~0.15 s), never for mcp, aiosqlite, keyring or jieba. Every GatewayError
becomes one red line on stderr and exit code 1 (usage errors exit 2, as click does);
`--debug` shows the traceback instead.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from mbe_gateway import __version__
from mbe_gateway.errors import GatewayError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from rich.console import Console

    from mbe_gateway.control.owner import Answer
    from mbe_gateway.secrets import Secrets


@dataclass(frozen=True)
class _Options:
    config: Path | None
    debug: bool


class _Group(TyperGroup):
    """The root command group: turns a GatewayError from any command into one clear line."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except GatewayError as e:
            if isinstance(ctx.obj, _Options) and ctx.obj.debug:
                raise
            _fail(str(e))


app = typer.Typer(
    cls=_Group,
    name="mbe-gateway",
    help="A personal AI assistant on your own machine, with MBE's memory over MCP.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # plain tracebacks with --debug; never locals (secrets)
)
secrets_app = typer.Typer(help="Store, list and delete secrets (API keys, bot tokens).", no_args_is_help=True)
config_app = typer.Typer(help="Check the config file, or show where it is.", no_args_is_help=True)
pairing_app = typer.Typer(help="Approve or deny who may talk to the assistant.", no_args_is_help=True)
service_app = typer.Typer(
    help="Run the daemon as a service: a systemd user unit (Linux) or a LaunchAgent (macOS).",
    no_args_is_help=True,
)
sessions_app = typer.Typer(
    help="The running daemon's conversations: `sessions` lists them, `sessions show KEY` shows one.",
    invoke_without_command=True,
)
claude_app = typer.Typer(
    help="Let Claude Desktop use mbe-gateway's memory and chats (its MCP server).", no_args_is_help=True
)
app.add_typer(secrets_app, name="secrets")
app.add_typer(config_app, name="config")
app.add_typer(pairing_app, name="pairing")
app.add_typer(service_app, name="service")
app.add_typer(sessions_app, name="sessions")
app.add_typer(claude_app, name="claude-desktop")


def main() -> None:
    app()


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="The config file (default: $MBE_GATEWAY_CONFIG or the platform's).",
            metavar="PATH",
        ),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
) -> None:
    from mbe_gateway import logs

    ctx.obj = _Options(config=config, debug=debug)
    logs.configure("debug" if debug else "warning")


def _options(ctx: typer.Context) -> _Options:
    options = ctx.find_root().obj
    assert isinstance(options, _Options)
    return options


def _config_path(ctx: typer.Context) -> Path:
    from mbe_gateway import paths

    return _options(ctx).config or paths.config_file()


def _console(*, stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, markup=False, soft_wrap=True)


def _fail(message: str) -> NoReturn:
    from rich.text import Text

    _console(stderr=True).print(Text(f"error: {message}", style="bold red"))
    raise typer.Exit(1)


def _secrets(ctx: typer.Context) -> Secrets:
    from mbe_gateway import paths
    from mbe_gateway.config import load_config
    from mbe_gateway.secrets import Secrets

    return Secrets(load_config(_options(ctx).config).secrets, paths.data_dir())


_Answer = Annotated[str | None, typer.Option(metavar="TEXT")]


@app.command()
def init(
    ctx: typer.Context,
    yes: Annotated[
        bool,
        typer.Option("--yes", "--non-interactive", "-y", help="Ask nothing: flags, else the current values."),
    ] = False,
    language: Annotated[str | None, typer.Option(help="en or zh.", metavar="en|zh")] = None,
    channels: Annotated[
        str | None,
        typer.Option(help="Chat apps to answer on: telegram,discord,slack or none.", metavar="LIST"),
    ] = None,
    dm_policy: Annotated[
        str | None,
        typer.Option(help="pairing, allowlist or open, for every channel chosen.", metavar="POLICY"),
    ] = None,
    allow_from: Annotated[
        list[str] | None,
        typer.Option(help="CHANNEL:USER_ID allowed to write (repeat it).", metavar="CHANNEL:ID"),
    ] = None,
    providers: Annotated[
        str | None, typer.Option(help="Models in order: openai,anthropic,local,mbe or none.", metavar="LIST")
    ] = None,
    openai_base_url: Annotated[
        str | None, typer.Option(help="The OpenAI-compatible server.", metavar="URL")
    ] = None,
    openai_model: Annotated[str | None, typer.Option(help="Its model.", metavar="NAME")] = None,
    anthropic_model: Annotated[str | None, typer.Option(help="The Anthropic model.", metavar="NAME")] = None,
    local_model_path: Annotated[
        str | None, typer.Option(help="A GGUF file for the local model.", metavar="PATH")
    ] = None,
    secret_file: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=PATH: a token or key read from a file (- = stdin), never from the command line.",
            metavar="NAME=PATH",
        ),
    ] = None,
    secrets_backend: Annotated[
        str | None,
        typer.Option(help="Where secrets go: auto (OS keyring), keyring, file or env.", metavar="NAME"),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Start over from the default file (the old one is kept as .bak).")
    ] = False,
    skip_doctor: Annotated[
        bool, typer.Option("--skip-doctor", help="Do not run the checks at the end.")
    ] = False,
) -> None:
    """Set up (or change) the config, secrets and control tokens: a wizard, or flags for scripts."""
    from mbe_gateway import paths, wizard
    from mbe_gateway.control.auth import ensure_tokens
    from mbe_gateway.secrets import Secrets
    from mbe_gateway.texts import say

    path = _config_path(ctx)
    given = wizard.Given(
        language=language,
        channels=channels,
        dm_policy=dm_policy,
        allow_from=tuple(allow_from or ()),
        providers=providers,
        openai_base_url=openai_base_url,
        openai_model=openai_model,
        anthropic_model=anthropic_model,
        local_path=local_model_path,
        secret_files=tuple(secret_file or ()),
        secrets_backend=secrets_backend,
        assume_defaults=yes,
    )
    console = _console()
    config = wizard.run(path, given, fresh=force, console=console)
    lang = config.gateway.language
    try:
        _, made = ensure_tokens(Secrets(config.secrets, paths.data_dir()))
    except GatewayError as e:
        console.print(say(lang, "wizard_tokens_failed", error=e), style="yellow")
    else:
        if made:
            console.print(say(lang, "wizard_tokens_made", names=", ".join(made)))
    if not skip_doctor:
        from mbe_gateway import doctor

        console.print("\n" + say(lang, "wizard_doctor"), style="bold")
        options = _options(ctx)
        if not options.debug:
            from mbe_gateway import logs

            logs.configure("critical")
        doctor.run(path)
    console.print("\n" + wizard.next_steps(lang))


@secrets_app.command("set")
def secrets_set(ctx: typer.Context, name: Annotated[str, typer.Argument(help="e.g. telegram_token")]) -> None:
    """Store a secret (read from a hidden prompt, or from stdin when it is not a terminal)."""
    secrets = _secrets(ctx)
    if sys.stdin.isatty():
        value = typer.prompt(f"Value for {name}", hide_input=True, prompt_suffix=": ")
    else:
        value = sys.stdin.read().rstrip("\r\n")
    where = secrets.set(name, value)
    _console().print(f'Stored {name.lower()} in {where}. Refer to it as "secret:{name.lower()}".')


@secrets_app.command("list")
def secrets_list(ctx: typer.Context) -> None:
    """Show secret names and where each is set (never values)."""
    from rich.table import Table

    secrets = _secrets(ctx)
    console = _console()
    entries = secrets.entries()
    if entries:
        table = Table("name", "set in (first wins)", box=None, header_style="bold")
        for entry in entries:
            table.add_row(entry.name, ", ".join(entry.locations))
        console.print(table)
    else:
        console.print("No secrets yet. Store one with `mbe-gateway secrets set NAME`.")
    console.print(f"Lookup: {secrets.backend_description()}", style="dim")


@secrets_app.command("delete")
def secrets_delete(ctx: typer.Context, name: str) -> None:
    """Delete a secret from the keyring (or the opt-in file)."""
    _secrets(ctx).delete(name)
    _console().print(f"Deleted {name.lower()}.")


@pairing_app.command("list")
def pairing_list(ctx: typer.Context) -> None:
    """Show pending pairing requests and the senders already approved."""
    import anyio
    from rich.table import Table

    from mbe_gateway.config import load_config
    from mbe_gateway.control import owner

    config = load_config(_options(ctx).config)
    answer = anyio.run(owner.pairing_list, config, _secrets(ctx))
    pending, approved = answer.payload["pending"], answer.payload["approved"]
    console = _console()
    if pending:
        table = Table("code", "channel", "sender", "name", "expires in", box=None, header_style="bold")
        for request in pending:
            minutes = max(0, round((request["expires_at"] - _now()) / 60))
            table.add_row(
                request["code"],
                request["channel"],
                request["sender_id"],
                request["sender_name"] or "",
                f"{minutes} min",
            )
        console.print(table)
        console.print("Approve with `mbe-gateway pairing approve CODE`, or `deny CODE`.", style="dim")
    else:
        console.print("No pending pairing requests.")
    if approved:
        console.print(
            "\nApproved: "
            + ", ".join(f"{a['channel']}:{a['sender_id']} ({a['sender_name'] or '?'})" for a in approved)
        )


@pairing_app.command("approve")
def pairing_approve(ctx: typer.Context, code: str) -> None:
    """Let the sender behind CODE talk to the assistant (they are told so)."""
    from mbe_gateway.control import owner

    answer = _pairing_change(ctx, owner.pairing_approve, code)
    _pairing_done("Approved", answer, "they are told when it starts")


@pairing_app.command("deny")
def pairing_deny(ctx: typer.Context, code: str) -> None:
    """Drop the pairing request behind CODE."""
    from mbe_gateway.control import owner

    _pairing_done("Denied", _pairing_change(ctx, owner.pairing_deny, code), None)


@pairing_app.command("revoke")
def pairing_revoke(ctx: typer.Context, channel: str, sender_id: str) -> None:
    """Take back an approval: the sender must pair again."""
    from mbe_gateway.control import owner

    _pairing_done("Revoked", _pairing_change(ctx, owner.pairing_revoke, channel, sender_id), None)


def _pairing_change(ctx: typer.Context, change: Callable[..., Awaitable[Answer]], *args: str) -> Answer:
    """Run one of control.owner's pairing changes: through the daemon, or in the store."""
    import anyio

    from mbe_gateway.config import load_config

    config = load_config(_options(ctx).config)
    return anyio.run(change, config, _secrets(ctx), *args)


def _pairing_done(verb: str, answer: Answer, later: str | None) -> None:
    sender = answer.payload
    console = _console()
    console.print(f"{verb} {sender['sender_name'] or sender['sender_id']} on {sender['channel']}.")
    if not answer.live:
        note = "No daemon answered: done in its database" + (f"; {later}." if later else ".")
        console.print(note, style="dim")


@app.command()
def send(
    ctx: typer.Context,
    channel: Annotated[str, typer.Argument(help="A running channel: telegram, discord or slack.")],
    chat_id: Annotated[str, typer.Argument(help="The chat to write to, as `sessions` lists it.")],
    text: Annotated[str, typer.Argument(help="What to say.")],
) -> None:
    """Send a message to a chat through the running daemon (needs the admin token)."""
    import anyio

    from mbe_gateway.config import load_config
    from mbe_gateway.control import owner

    config = load_config(_options(ctx).config)
    queued = anyio.run(owner.send, config, _secrets(ctx), channel, chat_id, text)
    _console().print(
        f"Queued for {channel}:{chat_id} (outbox #{queued['outbox_id']}); the daemon sends it now."
    )


_LIMIT = typer.Option("--limit", "-n", min=1, max=500, help="How many, the most recent first.")
_CHANNEL = typer.Option("--channel", help="Only this channel's.", metavar="NAME")


@sessions_app.callback()
def sessions(
    ctx: typer.Context,
    limit: Annotated[int, _LIMIT] = 20,
    channel: Annotated[str | None, _CHANNEL] = None,
) -> None:
    """List the running daemon's conversations, the most recently active first."""
    if ctx.invoked_subcommand is None:
        _sessions_table(ctx, limit, channel)


@sessions_app.command("list")
def sessions_list(
    ctx: typer.Context,
    limit: Annotated[int, _LIMIT] = 20,
    channel: Annotated[str | None, _CHANNEL] = None,
) -> None:
    """List the running daemon's conversations, the most recently active first."""
    _sessions_table(ctx, limit, channel)


@sessions_app.command("show")
def sessions_show(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="The session's id, or CHANNEL:CHAT_ID.", metavar="KEY")],
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=500, help="The last N messages.")] = 50,
) -> None:
    """Show one conversation's messages since its last reset."""
    import anyio
    from rich.table import Table

    from mbe_gateway.config import load_config
    from mbe_gateway.control import owner

    config = load_config(_options(ctx).config)
    answer = anyio.run(lambda: owner.history(config, _secrets(ctx), key, limit=limit))
    session, messages = answer["session"], answer["messages"]
    console = _console()
    console.print(
        f"Session {session['id']}: {session['channel']}:{session['chat_id']}, {session['turns']} turns, "
        f"last active {_when(session['last_active_at'])}",
        style="bold",
    )
    if not messages:
        console.print("Nothing said since the last reset.")
        return
    table = Table("when", "who", "text", box=None, header_style="bold")
    for message in messages:
        who = "assistant" if message["role"] == "assistant" else str(message["sender_id"] or "user")
        table.add_row(_when(message["created_at"]), who, message["text"])
    console.print(table)


def _sessions_table(ctx: typer.Context, limit: int, channel: str | None) -> None:
    import anyio
    from rich.table import Table

    from mbe_gateway.config import load_config
    from mbe_gateway.control import owner

    config = load_config(_options(ctx).config)
    found = anyio.run(lambda: owner.sessions(config, _secrets(ctx), limit=limit, channel=channel))
    console = _console()
    if not found:
        console.print("No conversations yet.")
        return
    table = Table("id", "channel", "chat", "turns", "last active", box=None, header_style="bold")
    for session in found:
        table.add_row(
            str(session["id"]),
            session["channel"],
            session["chat_id"],
            str(session["turns"]),
            _when(session["last_active_at"]),
        )
    console.print(table)
    console.print("Show one with `mbe-gateway sessions show ID` (or CHANNEL:CHAT_ID).", style="dim")


def _when(timestamp: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


@config_app.command("check")
def config_check(ctx: typer.Context) -> None:
    """Validate the config file."""
    from mbe_gateway.config import load_config

    config = load_config(_options(ctx).config)
    console = _console()
    if not config.exists:
        console.print(
            f"No config file at {config.path}: every default applies (create one with `mbe-gateway init`)."
        )
        return
    channels = [name for name in ("telegram", "discord", "slack") if getattr(config.channels, name).enabled]
    console.print(f"{config.path} is valid.")
    mbe = f"url {config.mbe.url}" if config.mbe.url else " ".join(config.mbe.command or ("embedded engine",))
    console.print(f"  MBE: {mbe}")
    console.print(f"  LLM providers: {', '.join(p.name for p in config.llm.providers) or 'none'}")
    console.print(f"  channels on: {', '.join(channels) or 'none'}")
    console.print("The file only: `mbe-gateway doctor` checks its secrets, the engine, models and channels.")


@config_app.command("path")
def config_path(ctx: typer.Context) -> None:
    """Print where the config file is (or would be)."""
    typer.echo(str(_config_path(ctx)))


@app.command()
def engine(
    db: Annotated[
        Path | None,
        typer.Option("--db", help="The engine's database (default: in the data dir).", metavar="PATH"),
    ] = None,
) -> None:
    """Run the embedded MBE engine as an MCP server over stdio."""
    from mbe_gateway.engine import serve

    serve(db)


@app.command()
def mcp(ctx: typer.Context) -> None:
    """Serve MBE's memory and the gateway's chats to Claude Desktop, Cursor, ... (MCP over stdio)."""
    from mbe_gateway import logs
    from mbe_gateway.config import load_config
    from mbe_gateway.mcp_server import serve

    options = _options(ctx)
    config = load_config(options.config)
    logs.configure("debug" if options.debug else "info", console=True)  # stderr: stdout is the wire
    serve(config)


_PLATFORM = typer.Option(
    "--platform", help="Whose config file: macos, windows or linux (default: this machine's).", metavar="NAME"
)


def _claude_config(platform: str | None) -> Path:
    from mbe_gateway import claude_desktop

    if platform is not None and platform not in claude_desktop.PLATFORMS:
        expected = ", ".join(claude_desktop.PLATFORMS)
        raise typer.BadParameter(f"expected one of {expected}, got {platform!r}", param_hint="--platform")
    chosen = next((p for p in claude_desktop.PLATFORMS if p == platform), claude_desktop.this_platform())
    return claude_desktop.config_path(chosen)


@claude_app.command("install")
def claude_install(
    ctx: typer.Context,
    print_only: Annotated[
        bool, typer.Option("--print", help="Only print the JSON entry; change no file.")
    ] = False,
    platform: Annotated[str | None, _PLATFORM] = None,
) -> None:
    """Add mbe-gateway to Claude Desktop's MCP servers (other servers are kept; a backup is made)."""
    from mbe_gateway import claude_desktop

    entry = claude_desktop.server_entry(claude_desktop.this_command(), config=_options(ctx).config)
    if print_only:
        typer.echo(claude_desktop.snippet(entry), nl=False)
        return
    path = _claude_config(platform)
    had_folder = path.parent.exists()
    change = claude_desktop.install(path, entry)
    console = _console()
    if change.action == "unchanged":
        console.print(f"Claude Desktop already starts mbe-gateway ({path}); nothing changed.")
        return
    console.print(f"{change.action.capitalize()} mbe-gateway in {path}.")
    if change.backup is not None:
        console.print(f"The file as it was: {change.backup}", style="dim")
    if not had_folder:
        console.print("Note: that folder did not exist yet; is Claude Desktop installed?", style="yellow")
    console.print("Restart Claude Desktop to load it (see docs/mcp.md).")


@claude_app.command("uninstall")
def claude_uninstall(platform: Annotated[str | None, _PLATFORM] = None) -> None:
    """Remove mbe-gateway from Claude Desktop's MCP servers, and nothing else."""
    from mbe_gateway import claude_desktop

    change = claude_desktop.uninstall(_claude_config(platform))
    console = _console()
    if change.action == "absent":
        console.print(f"mbe-gateway is not in {change.path}; nothing changed.")
        return
    console.print(f"Removed mbe-gateway from {change.path} (the file as it was: {change.backup}).")
    console.print("Restart Claude Desktop for it to take effect.")


@app.command()
def chat(
    ctx: typer.Context,
    message: Annotated[
        str | None,
        typer.Option(
            "--message", "-m", help="Answer this one message, print the reply and exit.", metavar="TEXT"
        ),
    ] = None,
    plain: Annotated[
        bool, typer.Option("--plain", help="With --message: the answer alone, without the decoration lines.")
    ] = False,
    language: Annotated[
        str | None,
        typer.Option(
            "--language",
            help="The assistant's own words: en or zh (default: [gateway] language).",
            metavar="en|zh",
        ),
    ] = None,
) -> None:
    """Chat with the assistant in this terminal; it remembers you across runs."""
    from mbe_gateway import chat as terminal_chat
    from mbe_gateway import logs, paths
    from mbe_gateway.config import LANGUAGES, load_config

    if language is not None and language not in LANGUAGES:
        raise typer.BadParameter(f"expected en or zh, got {language!r}", param_hint="--language")
    options = _options(ctx)
    config = load_config(options.config)
    try:  # the parts' log lines go to the log file: on the terminal they would break into the chat
        logs.configure(
            "debug" if options.debug else "info", log_dir=paths.data_dir() / "logs", console=options.debug
        )
    except OSError:  # an unwritable data dir is reported by the store, in one line
        logs.configure("warning")
    chosen = next((code for code in LANGUAGES if code == language), None)
    raise typer.Exit(terminal_chat.run(config, message=message, plain=plain, language=chosen))


@app.command()
def run(ctx: typer.Context) -> None:
    """Run the daemon: answer on every enabled channel until SIGTERM or Ctrl-C."""
    import anyio

    from mbe_gateway import logs, paths
    from mbe_gateway.config import load_config
    from mbe_gateway.gateway import serve

    options = _options(ctx)
    config = load_config(options.config)
    level = "debug" if options.debug else config.gateway.log_level
    logs.configure(level, log_dir=paths.data_dir() / "logs", console=True)
    anyio.run(serve, config)


@app.command()
def status(
    ctx: typer.Context,
    as_json: Annotated[
        bool, typer.Option("--json", help="The daemon's answer as JSON, for scripts.")
    ] = False,
) -> None:
    """Show the running daemon: its channels, engine, models and queues."""
    import json

    import anyio

    from mbe_gateway.config import load_config
    from mbe_gateway.control.auth import client_token
    from mbe_gateway.control.client import connect

    config = load_config(_options(ctx).config)
    token = client_token(_secrets(ctx), "read")

    async def ask() -> dict[str, Any]:
        async with connect(config.control, token) as client:
            return await client.call("status")

    answer = anyio.run(ask)
    if as_json:
        typer.echo(json.dumps(answer, indent=2, ensure_ascii=False))
        return
    from rich.table import Table

    table = Table(box=None, show_header=False)
    for label, value in _status_lines(answer):
        table.add_row(label, value)
    _console().print(table)


@app.command()
def token(
    ctx: typer.Context,
    read: Annotated[
        bool, typer.Option("--read", help="The read-only token (for a dashboard or Prometheus).")
    ] = False,
) -> None:
    """Print the control token, to sign in to the control page or give to a dashboard."""
    from mbe_gateway.config import load_config
    from mbe_gateway.control.auth import ADMIN_TOKEN, READ_TOKEN

    config = load_config(_options(ctx).config)
    name = READ_TOKEN if read else ADMIN_TOKEN
    try:
        value = _secrets(ctx).get(name)
    except GatewayError as e:
        _fail(f"{e}; `mbe-gateway init` or the first `mbe-gateway run` makes the control tokens")
    typer.echo(value)
    host = "127.0.0.1" if config.control.host in ("0.0.0.0", "::", "") else config.control.host  # noqa: S104
    page = f"http://{host}:{config.control.port}/"
    _console(stderr=True).print(
        f"Paste it into the control page at {page}. It is a password: keep it out of chats, "
        "URLs and shared screens.",
        style="dim",
    )


def _status_lines(answer: dict[str, Any]) -> list[tuple[str, str]]:
    """The `status` answer as label/value rows for people (docs/control-protocol.md has the fields)."""
    uptime = int(answer.get("uptime_s", 0))
    lines = [
        ("daemon", f"mbe-gateway {answer.get('version')}, pid {answer.get('pid')}, up {_duration(uptime)}")
    ]
    components = answer.get("components") or {}
    if components.get("assistant") == "starting":
        lines.append(("assistant", "starting (messages wait in the inbox)"))
    engine = answer.get("engine") or {}
    detail = str(engine.get("state"))
    if engine.get("server"):
        detail += f" ({engine['server']}" + (f", pid {engine['pid']})" if engine.get("pid") else ")")
    if engine.get("state") != "ready" and engine.get("last_error"):
        detail += f": {engine['last_error']}"
    lines.append(("engine", detail))
    for name, state in (answer.get("channels") or {}).items():
        lines.append((name, str(state)))
    if not answer.get("channels"):
        lines.append(("channels", "none enabled"))
    if answer.get("model"):
        lines.append(("model", str(answer["model"])))
    for provider in answer.get("providers") or []:
        if provider.get("cooling_down_for"):
            health = f"cooling down {provider['cooling_down_for']:.0f} s: {provider.get('last_error')}"
        else:
            health = "ok"
        lines.append((f"  {provider.get('name')}", health))
    queues = answer.get("queues") or {}
    lines.append(("queues", ", ".join(f"{name.replace('_', ' ')} {n}" for name, n in queues.items())))
    delivery = answer.get("delivery") or {}
    lines.append(("delivered", f"{delivery.get('sent', 0)} sent, {delivery.get('failed', 0)} given up"))
    return lines


def _duration(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


@app.command()
def doctor(ctx: typer.Context) -> None:
    """Check config, secrets, data, the database and MBE, with a fix for each problem."""
    from mbe_gateway import logs
    from mbe_gateway.doctor import run

    options = _options(ctx)
    if not options.debug:  # doctor reports every finding itself; the parts' warnings would repeat them
        logs.configure("critical")
    raise typer.Exit(run(options.config))


_DryRun = Annotated[
    bool,
    typer.Option("--dry-run", help="Print every file and command it would write or run; change nothing."),
]
_PlatformOption = Annotated[
    str | None,
    typer.Option(
        "--platform", help="linux or macos (default: this machine's), for dry runs.", metavar="NAME"
    ),
]


def _service_platform(name: str | None) -> Any:
    from mbe_gateway import services

    if name is None:
        return services.this_platform()
    for platform in services.PLATFORMS:
        if platform == name:
            return platform
    raise typer.BadParameter(f"expected linux or macos, got {name!r}", param_hint="--platform")


@service_app.command("install")
def service_install(ctx: typer.Context, dry_run: _DryRun = False, platform: _PlatformOption = None) -> None:
    """Install the daemon as your user's service, enable it at login and start it now."""
    from mbe_gateway import services
    from mbe_gateway.config import load_config

    chosen = _service_platform(platform)
    config = load_config(_options(ctx).config)
    spec = services.spec_for(config)
    target = services.service_file(chosen, Path.home())
    plan = services.plan_install(chosen, spec, target, services.uid())
    console = _console()
    if dry_run:
        for step in plan.steps:
            console.print(str(step))
            if isinstance(step, services.Write):
                console.print(step.text, style="dim")
    else:
        services.carry_out(plan)
        console.print(f"Installed {target} and started it: {' '.join(spec.command)}")
    if not config.exists:
        console.print(f"Note: no {config.path} yet: the service runs on the defaults.", style="yellow")
    if chosen == "linux":
        _explain_linger(console, services.linger_enabled(services.user_name()))
        console.print(
            "Secrets without a keyring: put MBE_GATEWAY_SECRET_<NAME>=value lines in "
            f"{spec.environment_file} (chmod 600); the unit reads it."
        )
    missing = services.shell_only_secrets(spec.environment_file if chosen == "linux" else None)
    if missing:
        console.print(
            f"Warning: this shell sets {', '.join(missing)} by environment variable, which the service "
            "does not inherit: store them with `mbe-gateway secrets set NAME`"
            + (f", or add them to {spec.environment_file}." if chosen == "linux" else "."),
            style="yellow",
        )
    console.print("See it with `mbe-gateway service status` and `mbe-gateway service logs --follow`.")


def _explain_linger(console: Console, linger: bool | None) -> None:
    if linger:
        console.print("Linger is on: the service keeps running when you log out, and starts at boot.")
        return
    state = "off" if linger is False else "unknown here"
    console.print(
        f"Linger is {state}: systemd stops your user services when you log out, and starts them only at "
        "your login. On a headless machine (a Raspberry Pi), run once: sudo loginctl enable-linger $USER",
        style="yellow",
    )


@service_app.command("uninstall")
def service_uninstall(dry_run: _DryRun = False, platform: _PlatformOption = None) -> None:
    """Stop the service and remove it (the config, data and secrets stay)."""
    from mbe_gateway import services

    chosen = _service_platform(platform)
    target = services.service_file(chosen, Path.home())
    plan = services.plan_uninstall(chosen, target, services.uid())
    console = _console()
    if not plan.steps:
        console.print(f"Not installed (no {target}); nothing to do.")
        return
    if dry_run:
        for line in plan.describe():
            console.print(line)
        return
    services.carry_out(plan)
    console.print(f"Stopped the service and removed {target}.")


@service_app.command("status")
def service_status(platform: _PlatformOption = None) -> None:
    """Show the service manager's view: installed, running, restarts (exit code as systemctl's)."""
    from mbe_gateway import services

    chosen = _service_platform(platform)
    target = services.service_file(chosen, Path.home())
    if not target.exists():
        _console().print(f"Not installed (no {target}); `mbe-gateway service install` installs it.")
        raise typer.Exit(3)
    if chosen == "linux":
        _explain_linger(_console(), services.linger_enabled(services.user_name()))
    raise typer.Exit(services.run_attached(services.status_command(chosen)))


@service_app.command("logs")
def service_logs(
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", help="How many recent lines.", min=1)] = 100,
    platform: _PlatformOption = None,
) -> None:
    """Print the service's recent output (journald on Linux, the log files on macOS)."""
    from mbe_gateway import paths, services

    chosen = _service_platform(platform)
    argv = services.logs_command(chosen, paths.data_dir() / "logs", lines=lines, follow=follow)
    raise typer.Exit(services.run_attached(argv))


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(f"mbe-gateway {__version__}")


def _now() -> float:
    import time

    return time.time()
