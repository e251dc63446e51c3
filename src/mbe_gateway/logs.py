"""Structured logs: JSON lines to a rotating file in the data dir, readable text on a terminal.

Parts log with the stdlib `logging` module and put their fields in `extra=` (never in the
message by string formatting), so the file stays machine-readable. Secrets must never reach a
log call in the first place; the redaction here is a second line of defence that masks
anything shaped like a platform token or API key, in messages, fields and tracebacks alike.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

# Shapes of the credentials this project handles: Telegram bot tokens, Slack tokens, OpenAI- and
# Anthropic-style keys, Discord bot tokens, bearer headers, and "secret:" values that leaked.
_TOKEN_SHAPES: Final = re.compile(
    r"\b\d{6,}:[A-Za-z0-9_-]{30,}\b"  # Telegram
    r"|\bxox[abposr]-[A-Za-z0-9-]{10,}"  # Slack bot/user/app tokens
    r"|\bxapp-[A-Za-z0-9-]{10,}"
    r"|\bsk-[A-Za-z0-9_-]{16,}"  # OpenAI, Anthropic (sk-ant-…), DeepSeek
    r"|\b[MNO][A-Za-z0-9_-]{23,27}\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27,}"  # Discord
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,}"
    r"|(?<=ticket=)[A-Za-z0-9._~-]{8,}"  # Slack Socket Mode WebSocket URLs (single-use, but live)
)
MASK: Final = "[redacted]"

# LogRecord attributes that are not user fields: everything else in __dict__ came from extra=.
_STANDARD: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def redact(text: str) -> str:
    return _TOKEN_SHAPES.sub(MASK, text)


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


class JSONFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the extra fields, and exc when raised."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(fields_of(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, ensure_ascii=False, default=str))


class TextFormatter(logging.Formatter):
    """`12:00:01 warning mbe_gateway.mbe: engine restarted  attempt=2 delay=0.8` for people."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        fields = "  ".join(f"{k}={v}" for k, v in fields_of(record).items())
        line = f"{when} {record.levelname.lower():7} {record.name}: {record.getMessage()}"
        if fields:
            line += "  " + fields
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)


def configure(level: str = "info", *, log_dir: Path | None = None, console: bool = True) -> None:
    """Route the logs to the console (stderr) and, if given, a rotating JSON file.

    Our loggers (`mbe_gateway.*`) log at `level`; the libraries' own (hikari, aiogram, the
    mcp SDK…) at warning and above, through the same handlers, so their lines are structured
    and redacted too instead of reaching Python's bare last-resort handler. Called once by each
    entry point; calling it again replaces the handlers it installed (and only those).
    """
    ours = logging.getLogger("mbe_gateway")
    ours.setLevel(level.upper())
    ours.propagate = True
    root = logging.getLogger()
    root.setLevel(logging.WARNING)
    for logger in (root, ours):
        for handler in [h for h in logger.handlers if getattr(h, _OURS, False)]:
            logger.removeHandler(handler)
            handler.close()
    handlers: list[logging.Handler] = []
    if console:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(TextFormatter())
        handlers.append(stream)
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        file = logging.handlers.RotatingFileHandler(
            log_dir / "gateway.log", maxBytes=5_000_000, backupCount=5, encoding="utf-8"
        )
        file.setFormatter(JSONFormatter())
        handlers.append(file)
    for handler in handlers:
        setattr(handler, _OURS, True)
        root.addHandler(handler)


_OURS: Final = "_mbe_gateway_handler"
