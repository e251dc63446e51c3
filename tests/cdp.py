"""Headless Chromium, driven over the Chrome DevTools Protocol with aiohttp's WebSocket client.

No browser-automation dependency: Debian's `chromium` is started with a debugging port of 0,
the port it chose is read from <profile>/DevToolsActivePort, and one WebSocket to the browser
carries every command, each page's on its own flattened session.

    async with chromium(tmp_path) as browser:
        tab = await browser.new_tab()
        await tab.goto("http://127.0.0.1:18789/")
        await tab.wait_for("document.title !== ''")
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import anyio

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = (
    "--headless",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-port=0",
)
START_WITHIN = 60.0  # seconds for the browser to open its debugging port (2 shared cores)


class CDPError(Exception):
    """A command the browser refused, or a script that threw in the page."""


@dataclass
class _Waiter:
    done: anyio.Event = field(default_factory=anyio.Event)
    answer: dict[str, Any] = field(default_factory=dict)


class Browser:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._waiting: dict[int, _Waiter] = {}
        self.events: list[dict[str, Any]] = []  # every event, from every tab, as it came

    async def send(
        self, method: str, params: Mapping[str, Any] | None = None, *, session: str | None = None
    ) -> dict[str, Any]:
        """The result of one command; CDPError if the browser refused it."""
        command_id = next(self._ids)
        frame: dict[str, Any] = {"id": command_id, "method": method, "params": dict(params or {})}
        if session is not None:
            frame["sessionId"] = session
        waiter = self._waiting[command_id] = _Waiter()
        await self._ws.send_str(json.dumps(frame))
        with anyio.fail_after(30):
            await waiter.done.wait()
        if "error" in waiter.answer:
            raise CDPError(f"{method}: {waiter.answer['error']}")
        result: dict[str, Any] = waiter.answer.get("result", {})
        return result

    async def new_tab(self) -> Tab:
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
        tab = Tab(self, attached["sessionId"])
        for domain in ("Page", "Runtime", "Log"):
            await tab.send(f"{domain}.enable")
        return tab

    async def read(self) -> None:
        async for message in self._ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                break
            frame = json.loads(message.data)
            if "id" in frame:
                waiter = self._waiting.pop(frame["id"], None)
                if waiter is not None:
                    waiter.answer = frame
                    waiter.done.set()
            else:
                self.events.append(frame)


class Tab:
    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session

    async def send(self, method: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return await self.browser.send(method, params, session=self.session)

    def events(self, method: str) -> list[dict[str, Any]]:
        """This tab's events named `method`, so far."""
        return [
            e["params"]
            for e in self.browser.events
            if e.get("sessionId") == self.session and e.get("method") == method
        ]

    async def goto(self, url: str) -> None:
        loads = len(self.events("Page.loadEventFired"))
        navigated = await self.send("Page.navigate", {"url": url})
        if navigated.get("errorText"):
            raise CDPError(f"{url}: {navigated['errorText']}")
        await self._until(lambda: len(self.events("Page.loadEventFired")) > loads, f"{url} to load")

    async def evaluate(self, expression: str) -> Any:
        """The value of `expression` in the page (promises awaited)."""
        answer = await self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}
        )
        if "exceptionDetails" in answer:
            details = answer["exceptionDetails"]
            raise CDPError(f"{expression}: {details.get('exception', {}).get('description') or details}")
        return answer["result"].get("value")

    async def wait_for(self, expression: str, *, timeout: float = 30) -> Any:
        """The first truthy value of `expression`, looked at every 50 ms."""
        with anyio.move_on_after(timeout):
            while True:
                value = await self.evaluate(expression)
                if value:
                    return value
                await anyio.sleep(0.05)
        raise TimeoutError(f"after {timeout} s still falsy: {expression}")

    async def type(self, selector: str, text: str) -> None:
        """Focus the field and type into it, as a person (or a paste) would."""
        await self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        await self.send("Input.insertText", {"text": text})

    async def click(self, selector: str) -> None:
        await self.evaluate(f"document.querySelector({json.dumps(selector)}).click()")

    async def history(self) -> list[str]:
        """Every URL in the tab's history."""
        entries = (await self.send("Page.getNavigationHistory"))["entries"]
        return [str(e["url"]) for e in entries]

    def problems(self) -> list[str]:
        """Uncaught exceptions and console errors (a CSP violation is one) in this tab."""
        thrown = [str(e["exceptionDetails"]) for e in self.events("Runtime.exceptionThrown")]
        logged = [str(e["entry"]) for e in self.events("Log.entryAdded") if e["entry"]["level"] == "error"]
        return thrown + logged

    async def _until(self, condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
        with anyio.move_on_after(timeout):
            while not condition():
                await anyio.sleep(0.02)
            return
        raise TimeoutError(f"waited {timeout} s for {what}")


@asynccontextmanager
async def chromium(profile: Path) -> AsyncIterator[Browser]:
    """A headless Chromium with its profile in `profile`, until the block ends."""
    assert CHROMIUM is not None, "chromium is not installed"
    command = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"]
    active = profile / "DevToolsActivePort"
    async with await anyio.open_process(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    ) as process:
        try:
            with anyio.fail_after(START_WITHIN):
                while not (active.exists() and len(active.read_text().splitlines()) >= 2):
                    if process.returncode is not None:
                        raise CDPError(f"chromium exited with code {process.returncode}")
                    await anyio.sleep(0.05)
            port, path = active.read_text().splitlines()[:2]
            async with (
                aiohttp.ClientSession() as http,
                http.ws_connect(f"ws://127.0.0.1:{port}{path}", max_msg_size=0) as ws,
            ):
                browser = Browser(ws)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(browser.read)
                    yield browser
                    tg.cancel_scope.cancel()
        finally:
            process.terminate()
            with anyio.move_on_after(10, shield=True):
                await process.wait()
            if process.returncode is None:
                process.kill()
