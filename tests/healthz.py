"""Waiting for a daemon started by a test: its control plane's `/healthz` answers ok."""

from __future__ import annotations

import aiohttp
import anyio


async def wait_healthy(port: int, *, within: float) -> None:
    """Until `GET /healthz` on loopback `port` says 200 (the daemon has its store and serves)."""
    async with aiohttp.ClientSession() as http:
        with anyio.fail_after(within):
            while True:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientConnectionError:
                    pass
                await anyio.sleep(0.1)
