"""Logs are structured and never carry a token, even when a caller slips one in."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from mbe_gateway import logs

TELEGRAM = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawQ"
SLACK = "xoxb-1234567890-abcdefghijKLMNOP"
OPENAI = "sk-proj-abcdefghijklmnopqrstuvwx"


@pytest.fixture
def log_dir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "logs"
    logs.configure("debug", log_dir=directory, console=False)
    yield directory
    logs.configure("info", log_dir=None, console=False)


def lines(log_dir: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (log_dir / "gateway.log").read_text().splitlines()]


def test_file_log_is_json_lines_with_the_extra_fields(log_dir: Path) -> None:
    logging.getLogger("mbe_gateway.test").info("engine ready", extra={"pid": 42, "latency_ms": 1.5})
    (entry,) = lines(log_dir)
    assert entry["msg"] == "engine ready"
    assert entry["logger"] == "mbe_gateway.test"
    assert entry["level"] == "info"
    assert entry["pid"] == 42 and entry["latency_ms"] == 1.5


def test_tokens_are_masked_in_messages_fields_and_tracebacks(log_dir: Path) -> None:
    log = logging.getLogger("mbe_gateway.test")
    log.warning("sending with %s", TELEGRAM, extra={"header": f"Bearer {OPENAI}", "slack": SLACK})
    try:
        raise RuntimeError(f"bad token {TELEGRAM}")
    except RuntimeError:
        log.exception("failed")
    text = (log_dir / "gateway.log").read_text()
    for secret in (TELEGRAM, SLACK, OPENAI):
        assert secret not in text
    assert text.count(logs.MASK) >= 4


def test_a_library_warning_goes_through_the_same_redacting_handlers(log_dir: Path) -> None:
    logging.getLogger("hikari.gateway").warning("reconnecting with token %s", TELEGRAM)
    logging.getLogger("hikari.gateway").info("chatty detail nobody asked for")
    (entry,) = lines(log_dir)
    assert entry["logger"] == "hikari.gateway"
    assert TELEGRAM not in entry["msg"]
    assert logs.MASK in entry["msg"]


def test_a_socket_mode_ticket_in_a_url_is_masked() -> None:
    url = "wss://wss-primary.slack.com/link/?ticket=1a2b3c4d-5e6f-7a8b-9c0d&app_id=A123"
    assert logs.redact(url) == f"wss://wss-primary.slack.com/link/?ticket={logs.MASK}&app_id=A123"


def test_ordinary_text_is_left_alone() -> None:
    text = "user 12345 asked about 2:30 pm, skipping ahead; order #sk-1"
    assert logs.redact(text) == text
