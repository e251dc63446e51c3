"""Slack's Web API as the Slack channel uses it: a client that retries what is worth retrying,
what Slack's error codes mean for us, and logs that carry no credential.

Retries live in slack-sdk's retry handlers, so every call gets them (auth.test,
apps.connections.open, chat.postMessage): a 429 is waited out when Slack asks for a short
pause (longer ones reach the caller, which hands the wait to the outbox); a 5xx or a broken
connection is retried three times with exponential backoff and jitter.

The SDK logs under "mbe_gateway.channels.slack.sdk", at warning and above: its debug lines
hold message bodies, and building them costs time on every request. Its error messages can
carry the Socket Mode WebSocket URL, whose one-time ticket is a credential: a filter masks it.
"""

from __future__ import annotations

import logging
import random
import re
import traceback
from typing import Any, Final

from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator
from slack_sdk.http_retry.jitter import Jitter
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient

# The token itself is refused: fix it, retrying won't help.
AUTH_ERRORS: Final = frozenset(
    [
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "not_allowed_token_type",
        "missing_scope",
        "no_permission",
        "team_access_not_granted",
    ]
)
# This conversation is gone or closed to the bot: sending again won't help.
GONE_ERRORS: Final = frozenset(
    [
        "channel_not_found",
        "is_archived",
        "not_in_channel",
        "user_not_found",
        "cannot_dm_bot",
        "restricted_action",
        "access_denied",
        "ekm_access_denied",
        "user_disabled",
    ]
)
# Slack refused what it was asked to render: worth one more try as plain text.
MARKUP_REFUSED: Final = frozenset({"invalid_blocks", "invalid_blocks_format", "invalid_arguments"})
# Slack's own trouble, answered with HTTP 200: worth trying again later.
TRANSIENT_ERRORS: Final = frozenset(
    {"internal_error", "fatal_error", "service_unavailable", "request_timeout", "ratelimited"}
)

sdk_log = logging.getLogger("mbe_gateway.channels.slack.sdk")

_TICKET: Final = re.compile(r"ticket=[^&\s'\"]+")


def web_client(token: str, api_base: str, *, timeout: float, max_rate_limit_wait: float) -> AsyncWebClient:
    """An AsyncWebClient for `api_base` (which must end in /api/) with our retries and logger."""
    backoff = BackoffRetryIntervalCalculator(backoff_factor=0.2, jitter=_ProportionalJitter())
    return AsyncWebClient(
        token=token,
        base_url=api_base if api_base.endswith("/") else api_base + "/",
        timeout=int(timeout),
        logger=sdk_log,
        retry_handlers=[
            _ShortRateLimitRetry(max_rate_limit_wait),
            _ServerErrorRetry(max_retry_count=3, interval_calculator=backoff),
            AsyncConnectionErrorRetryHandler(max_retry_count=3, interval_calculator=backoff),
        ],
    )


def error_code(error: SlackApiError) -> str:
    """Slack's error code ("channel_not_found"), or "" when the answer was not Slack's JSON."""
    data = error.response.data
    return str(data.get("error") or "") if isinstance(data, dict) else ""


def what_failed(error: SlackApiError) -> str:
    """The error code, else the HTTP status: never the SDK's own message, which holds the URL."""
    return error_code(error) or f"HTTP {error.response.status_code}"


def describe(error: BaseException) -> str:
    """An exception for a log line: its type and message, with Socket Mode tickets masked."""
    return mask(f"{type(error).__name__}: {error}")


def mask(text: str) -> str:
    return _TICKET.sub("ticket=[redacted]", text)


def retry_after(headers: Any) -> float:
    """Seconds from a Retry-After header (any capitalisation; a value or the SDK's list)."""
    for key, value in dict(headers).items():
        if key.lower() == "retry-after":
            raw = value[0] if isinstance(value, list) else value
            try:
                return max(0.0, float(raw))
            except ValueError:
                break
    return 1.0


class _ShortRateLimitRetry(AsyncRateLimitErrorRetryHandler):
    """Waits out a 429 (the SDK sleeps Retry-After plus up to 1 s) only when the wait is short."""

    def __init__(self, max_wait: float) -> None:
        super().__init__(max_retry_count=3)
        self.max_wait = max_wait

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        return bool(
            response is not None
            and response.status_code == 429
            and retry_after(response.headers) <= self.max_wait
        )


class _ServerErrorRetry(AsyncRetryHandler):
    """Retries a 5xx (the SDK's own handler knows only 500 and 503)."""

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        return response is not None and response.status_code in (500, 502, 503, 504)


class _ProportionalJitter(Jitter):
    """Half to one and a half times the backoff (the SDK's adds up to a whole second)."""

    def recalculate(self, duration: float) -> float:
        return duration * random.uniform(0.5, 1.5)


class _MaskTickets(logging.Filter):
    """Masks tickets in the SDK's records; a traceback (which repeats the URL) is folded into
    the message as its last line."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            last = traceback.format_exception_only(record.exc_info[1])[-1].strip()
            message = f"{message} [{last}]"
        record.msg, record.args, record.exc_info, record.exc_text = mask(message), (), None, None
        return True


sdk_log.setLevel(logging.WARNING)
sdk_log.addFilter(_MaskTickets())
