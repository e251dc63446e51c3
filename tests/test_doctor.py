"""`mbe-gateway doctor` tells a user, line by line, what works and what to fix."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from fake_llm_servers import Answer, Status, serve_fake_llm
from fakes.telegram import serve_fake_telegram
from mbe_gateway import contract

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawQ"


def doctor(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mbe_gateway", *args, "doctor"],
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def test_fresh_machine_passes_every_check_and_round_trips_each_tool(home: Path) -> None:
    result = doctor()
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "(absent: using the defaults)" in out
    assert "✓ database" in out
    assert "✓ mbe server" in out
    for tool in contract.REQUIRED_TOOLS:
        assert f"✓ {tool}" in out
        assert " ms" in out.split(f"✓ {tool}")[1].splitlines()[0]
    assert "- mbe_generate  not offered" in out
    assert (home / "gateway.sqlite3").exists()
    assert (home / "engine.sqlite3").exists()


def test_invalid_config_fails_and_says_where_without_touching_data(home: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[mbe]\ncall_timeout = 'soon'\n")
    result = doctor("--config", str(config))
    assert result.returncode == 1
    assert "✗ config" in result.stdout
    assert "call_timeout" in result.stdout
    assert "- everything else  needs a valid config" in result.stdout
    assert list(home.iterdir()) == []


def test_missing_secret_is_named_with_how_to_set_it(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[channels.telegram]\nenabled = true\ntoken = "secret:telegram_token"\n')
    result = doctor("--config", str(config))
    assert result.returncode == 1
    assert "✗ secret telegram_token" in result.stdout
    assert "MBE_GATEWAY_SECRET_TELEGRAM_TOKEN" in result.stdout
    assert "- mbe  needs the secrets above" in result.stdout


def test_secret_values_never_appear_in_the_output(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[channels.telegram]\nenabled = true\ntoken = "secret:telegram_token"\n')
    result = doctor("--config", str(config), env={"MBE_GATEWAY_SECRET_TELEGRAM_TOKEN": TOKEN})
    assert "✓ secret telegram_token  set" in result.stdout
    assert TOKEN not in result.stdout + result.stderr


def test_an_mbe_command_that_cannot_run_is_a_clear_failure(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[mbe]\ncommand = ["/nonexistent/mbe-server", "serve"]\nconnect_timeout = 5\n')
    result = doctor("--config", str(config))
    assert result.returncode == 1
    line = next(line for line in result.stdout.splitlines() if "mbe server" in line)
    assert line.startswith("✗")
    assert "/nonexistent/mbe-server" in line or "mbe-server" in line
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.anyio
async def test_each_provider_answers_with_its_latency_or_fails_clearly(tmp_path: Path) -> None:
    async with serve_fake_llm() as fake:
        fake.queue(Answer("ready"), Status(500))
        config = tmp_path / "config.toml"
        config.write_text(
            "[[llm.providers]]\n"
            f'kind = "openai"\nname = "good"\nbase_url = "{fake.openai_url}"\nmodel = "m1"\n'
            "[[llm.providers]]\n"
            f'kind = "openai"\nname = "broken"\nbase_url = "{fake.openai_url}"\nmodel = "m2"\n'
        )
        result = await anyio.run_process(
            [sys.executable, "-m", "mbe_gateway", "--config", str(config), "doctor"],
            check=False,
            env={**os.environ, "COLUMNS": "200"},
        )
    out = result.stdout.decode()
    assert result.returncode == 1
    assert re.search(r"✓ llm good  fake-model answered in \d+ ms", out), out
    assert "✗ llm broken" in out
    assert "500" in out.split("✗ llm broken")[1].splitlines()[0]


@pytest.mark.anyio
async def test_each_channel_token_is_checked_and_a_wrong_one_is_named_not_shown(tmp_path: Path) -> None:
    async with serve_fake_telegram() as telegram:
        config = tmp_path / "config.toml"
        config.write_text(
            "[channels.telegram]\n"
            f'enabled = true\ntoken = "secret:telegram_token"\napi_base = "{telegram.api_base}"\n'
        )

        async def doctor_with(token: str) -> str:
            result = await anyio.run_process(
                [sys.executable, "-m", "mbe_gateway", "--config", str(config), "doctor"],
                check=False,
                env={**os.environ, "COLUMNS": "200", "MBE_GATEWAY_SECRET_TELEGRAM_TOKEN": token},
            )
            return result.stdout.decode() + result.stderr.decode()

        good = await doctor_with(telegram.token)
        assert re.search(r"✓ channel telegram  @mbe_test_bot \(\d+ ms\)", good), good
        wrong = "123456789:AAwrongwrongwrongwrongwrongwrongwrong"
        bad = await doctor_with(wrong)
    line = next(line for line in bad.splitlines() if "channel telegram" in line)
    assert line.startswith("✗")
    assert "telegram_token" in line
    assert wrong not in bad
