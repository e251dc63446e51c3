"""`mbe-gateway doctor`: every part the gateway needs, checked in order, each with a fix hint.

Checks run one after another and each says pass or fail on its own line; a failing check
never hides the ones after it unless they cannot run without it (no config → nothing else
can be read). The MBE round trips write one probe memory under the user id
`mbe-gateway-doctor`, so the check exercises the same write path a conversation uses.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anyio

from mbe_gateway import contract, paths
from mbe_gateway.config import Config, load_config
from mbe_gateway.errors import GatewayError

PROBE_USER = "mbe-gateway-doctor"

Outcome = Literal["pass", "warn", "fail", "skip"]


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    outcome: Outcome
    detail: str
    hint: str = ""


def run(config_path: Path | None = None) -> int:
    """Run every check, print them, and return the exit code (0 when nothing failed)."""
    from rich.console import Console
    from rich.markup import escape

    console = Console(stderr=False, highlight=False)
    marks = {"pass": "[green]✓[/]", "warn": "[yellow]![/]", "fail": "[red]✗[/]", "skip": "[dim]-[/]"}
    checks: list[Check] = []

    def show(check: Check) -> None:
        checks.append(check)
        console.print(f"{marks[check.outcome]} [bold]{escape(check.name)}[/]  {escape(check.detail)}")
        if check.hint:
            console.print(f"    [dim]→ {escape(check.hint)}[/]")

    anyio.run(_run_checks, config_path, show)
    failed = sum(c.outcome == "fail" for c in checks)
    warned = sum(c.outcome == "warn" for c in checks)
    summary = "all checks passed" if not failed else f"{failed} check(s) failed"
    if warned:
        summary += f", {warned} warning(s)"
    console.print(f"\n{summary}")
    return 1 if failed else 0


async def _run_checks(config_path: Path | None, show: Callable[[Check], None]) -> None:
    try:
        config = load_config(config_path)
    except GatewayError as e:
        show(Check("config", "fail", str(e), "fix the file, or run `mbe-gateway config check` after editing"))
        show(Check("everything else", "skip", "needs a valid config"))
        return
    where = str(config.path) if config.exists else f"{config.path} (absent: using the defaults)"
    show(Check("config", "pass", where, "" if config.exists else "`mbe-gateway init` writes one to edit"))

    data = paths.data_dir()
    show(_check_data_dir(data))
    secrets_ok = _check_secrets(config, data, show)
    await _check_store(show)
    if secrets_ok:
        await _check_mbe(config, data, show)
        await _check_providers(config, data, show)
        await _check_channels(config, data, show)
    else:
        for part in ("mbe", "llm", "channels"):
            show(Check(part, "skip", "needs the secrets above"))


def _check_data_dir(data: Path) -> Check:
    try:
        data.mkdir(parents=True, exist_ok=True)
        probe = data / ".doctor-probe"
        probe.write_text("ok", encoding="utf-8")
        probe.unlink()
    except OSError as e:
        return Check(
            "data dir", "fail", f"{data}: {e.strerror or e}", f"make it writable, or set {paths.ENV_HOME}"
        )
    return Check("data dir", "pass", f"{data} (writable)")


def _check_secrets(config: Config, data: Path, show: Callable[[Check], None]) -> bool:
    from mbe_gateway.secrets import Secrets

    secrets = Secrets(config.secrets, data)
    outcome: Outcome = "warn" if secrets.is_degraded() else "pass"
    show(Check("secrets backend", outcome, secrets.backend_description()))
    ok = True
    for where, ref in _secret_refs(config):
        try:
            secrets.get(ref)
        except GatewayError as e:
            show(Check(f"secret {ref.name}", "fail", f"used by {where}, but {e}"))
            ok = False
        else:
            show(Check(f"secret {ref.name}", "pass", f"set (used by {where})"))
    return ok


def _secret_refs(config: Config) -> list[tuple[str, Any]]:
    """Every secret the config refers to, with where it is used (for the message)."""
    refs: list[tuple[str, Any]] = []
    if config.mbe.api_key is not None and config.mbe.url is not None:
        refs.append(("[mbe] api_key", config.mbe.api_key))
    for provider in config.llm.providers:
        if provider.api_key is not None:
            refs.append((f"LLM provider {provider.name}", provider.api_key))
    channels = config.channels
    for name, settings in (("telegram", channels.telegram), ("discord", channels.discord)):
        if settings.enabled and settings.token is not None:
            refs.append((f"[channels.{name}] token", settings.token))
    if channels.slack.enabled:
        for key in ("bot_token", "app_token"):
            ref = getattr(channels.slack, key)
            if ref is not None:
                refs.append((f"[channels.slack] {key}", ref))
    return refs


async def _check_store(show: Callable[[Check], None]) -> None:
    from mbe_gateway.store import open_database
    from mbe_gateway.store.schema import SCHEMA_VERSION

    path = paths.gateway_db()
    try:
        async with await open_database(path):
            pass
    except GatewayError as e:
        show(Check("database", "fail", str(e)))
        return
    show(Check("database", "pass", f"{path} (schema v{SCHEMA_VERSION}, WAL)"))


async def _check_mbe(config: Config, data: Path, show: Callable[[Check], None]) -> None:
    from mbe_gateway.mbe import MBEClient
    from mbe_gateway.mbe.servers import from_settings
    from mbe_gateway.secrets import Secrets

    try:
        server = from_settings(config.mbe, Secrets(config.secrets, data), data)
    except GatewayError as e:
        show(Check("mbe server", "fail", str(e)))
        return
    started = time.perf_counter()
    async with MBEClient(server, call_timeout=config.mbe.call_timeout, home=data) as mbe:
        try:
            await mbe.wait_ready(config.mbe.connect_timeout)
        except GatewayError as e:
            show(Check("mbe server", "fail", str(e), f"its log: {data / 'logs' / 'mbe-server.log'}"))
            return
        ready_ms = (time.perf_counter() - started) * 1000
        offered = [t for t in (*contract.REQUIRED_TOOLS, *contract.OPTIONAL_TOOLS) if mbe.offers(t)]
        show(
            Check(
                "mbe server", "pass", f"{server.name} ready in {ready_ms:.0f} ms; tools: {', '.join(offered)}"
            )
        )
        if not mbe.offers(contract.GENERATE):
            show(Check(contract.GENERATE, "skip", 'not offered (optional: only for kind = "mbe" providers)'))

        probes: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            (contract.SURPRISE, lambda: mbe.surprise("mbe-gateway doctor check", user_id=PROBE_USER)),
            (contract.ROUTE, lambda: mbe.route("how long should I boil an egg?", user_profile={})),
            (
                contract.MEMORY_WRITE,
                lambda: mbe.memory_write(PROBE_USER, "working", {"note": "doctor probe"}, 0.1),
            ),
            (contract.MEMORY_READ, lambda: mbe.memory_read(PROBE_USER, "doctor probe", top_k=1)),
            (contract.ANALYZE_LEARNING, lambda: mbe.analyze_learning(PROBE_USER, window_days=1)),
        ]
        for tool, probe in probes:
            started = time.perf_counter()
            try:
                await probe()
            except GatewayError as e:
                show(Check(tool, "fail", str(e)))
                continue
            show(Check(tool, "pass", f"{(time.perf_counter() - started) * 1000:.1f} ms"))


async def _check_providers(config: Config, data: Path, show: Callable[[Check], None]) -> None:
    """One short answer from each provider in the chain, in order, with its latency.

    A `kind = "mbe"` provider is checked by the MBE section (mbe_generate), not here: it needs
    the running MBE client, and the chain built here has none.
    """
    from mbe_gateway.llm import ChatMessage, build_provider
    from mbe_gateway.llm.factory import default_providers
    from mbe_gateway.secrets import Secrets

    try:
        providers = config.llm.providers or default_providers(config.path)
    except GatewayError as e:
        show(Check("llm", "warn", str(e), "the assistant cannot answer until a model is configured"))
        return
    secrets = Secrets(config.secrets, data)
    question = [ChatMessage("user", "Reply with one word: ready")]
    for settings in providers:
        if settings.kind == "mbe":
            continue
        name = f"llm {settings.name}"
        try:
            provider = build_provider(settings, secrets=secrets)
        except GatewayError as e:
            show(Check(name, "fail", str(e)))
            continue
        started = time.perf_counter()
        try:
            answer = await provider.complete(question, max_tokens=8)
        except GatewayError as e:
            show(Check(name, "fail", str(e)))
            continue
        finally:
            await provider.aclose()
        elapsed = (time.perf_counter() - started) * 1000
        show(Check(name, "pass", f"{answer.model or settings.kind} answered in {elapsed:.0f} ms"))


async def _check_channels(config: Config, data: Path, show: Callable[[Check], None]) -> None:
    """Each enabled channel's credentials, with one cheap call to its platform."""
    from contextlib import AsyncExitStack

    from mbe_gateway.gateway import enabled_platforms, open_channel
    from mbe_gateway.secrets import Secrets

    if not enabled_platforms(config):
        show(Check("channels", "warn", "none enabled", "enable one in the config, e.g. [channels.telegram]"))
        return
    secrets = Secrets(config.secrets, data)
    for name in enabled_platforms(config):
        async with AsyncExitStack() as stack:
            started = time.perf_counter()
            try:
                channel = await open_channel(name, config, secrets, stack)
                with anyio.fail_after(30):
                    who = await channel.check()
            except (GatewayError, TimeoutError) as e:
                reason = str(e) or "no answer within 30 s"
                show(Check(f"channel {name}", "fail", reason))
                continue
            elapsed = (time.perf_counter() - started) * 1000
            show(Check(f"channel {name}", "pass", f"{who} ({elapsed:.0f} ms)"))
