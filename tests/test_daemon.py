"""`mbe-gateway run` as a user runs it: a real process, answering on Telegram, stopped by a signal."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import anyio
import pytest

from fake_llm_servers import serve_fake_llm
from fakes.telegram import serve_fake_telegram


@pytest.mark.anyio
async def test_the_daemon_answers_a_dm_and_stops_cleanly_on_sigterm(tmp_path: Path, home: Path) -> None:
    async with serve_fake_telegram() as telegram, serve_fake_llm() as llm:
        config = tmp_path / "config.toml"
        config.write_text(
            "[[llm.providers]]\n"
            f'kind = "openai"\nbase_url = "{llm.openai_url}"\nmodel = "m"\n'
            "[channels.telegram]\n"
            f'enabled = true\ntoken = "secret:telegram_token"\napi_base = "{telegram.api_base}"\n'
            'dm_policy = "open"\n'
        )
        env = {**os.environ, "MBE_GATEWAY_SECRET_TELEGRAM_TOKEN": telegram.token}
        command = [sys.executable, "-m", "mbe_gateway", "--config", str(config), "run"]
        async with await anyio.open_process(command, env=env) as daemon:
            await telegram.wait_polling(timeout=30)
            telegram.dm("Good morning! What should I cook tonight?")
            (reply,) = await telegram.wait_sent(1, timeout=30)
            assert reply.text.startswith("Hello from the fake model.")
            daemon.send_signal(signal.SIGTERM)
            with anyio.fail_after(20):
                code = await daemon.wait()
            stderr = ""
            if daemon.stderr is not None:
                async for chunk in daemon.stderr:
                    stderr += chunk.decode(errors="replace")
    assert code == 0, stderr
    assert telegram.token not in stderr
    log = (home / "logs" / "gateway.log").read_text()
    assert '"msg": "mbe-gateway is running"' in log
    assert telegram.token not in log
