"""What the gateway lets in, after access: clean text, a bounded size, a bounded rate per sender.

`clean` makes a platform message safe for everything downstream (SQLite, the JSON logs, MCP
calls, the platforms' markup) at the gateway's door, before access is decided (a name is
stored with a pairing request); `pipeline.Request` applies `clean_text` again, for the doors
that are not the gateway's (the owner's control-plane and terminal chats). Lone surrogates
(what invalid UTF-8 becomes once decoded with `surrogateescape`, or what a JSON `"\\ud800"`
escape gives) turn into U+FFFD, NUL and the other control characters go, line breaks become
`\\n`; names and ids are single lines, and a display name is bounded (in a group it is put
in the prompt).

`Intake.admit` then decides, per message, without touching the disk:

- A sender (a person on a channel, across their chats) may send a burst of `burst` messages,
  then `per_minute` a minute (a token bucket). Past that, a message costs nothing: it is
  not stored and reaches neither MBE nor the model. The first one of a limited stretch
  gets one short notice (a notice per message would itself be a flood, and would keep two
  bots answering each other going forever); the stretch ends once the sender's bucket is
  full again, i.e. after they stayed within the rate long enough to have a whole burst back.
- A message longer than `max_chars` is refused with the "too long" answer; the gateway
  keeps none of its text.

A refused message that gets an answer is recorded by the gateway like any refusal (one inbox
row without its text, and the answer); a message dropped in a limited stretch is not stored
at all: only a count in memory, logged when the stretch ends. The buckets live in memory,
owned by the gateway, and are bounded: an idle sender's bucket is full, so it carries no
information and is forgotten.
"""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Final, Literal

from mbe_gateway.access import Verdict
from mbe_gateway.channels.base import Inbound
from mbe_gateway.config import Config
from mbe_gateway.texts import Language, say

log = logging.getLogger(__name__)

MAX_NAME_CHARS: Final = 128  # a display name (Telegram allows 64 + 64, Discord 32, Slack 80)
MAX_SENDERS: Final = 10_000  # buckets kept at most; the least recently seen go first
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_CONTROL: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # C0 but \t \n \r; DEL; C1
_LINE_BREAKS: Final = re.compile("\r\n?")
_NOT_ONE_LINE: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]+")

Key = tuple[str, str]  # (channel, sender_id)
Take = Literal["ok", "limited", "dropped"]  # limited: the first refused of a stretch


def clean(message: Inbound) -> Inbound:
    """The message with every text field safe to store, log, send to MBE and quote back."""
    name = clean_line(message.sender_name) if message.sender_name is not None else None
    if name is not None and len(name) > MAX_NAME_CHARS:
        name = name[: MAX_NAME_CHARS - 1] + "…"
    return replace(
        message,
        channel=clean_line(message.channel),
        platform_message_id=clean_line(message.platform_message_id),
        chat_id=clean_line(message.chat_id),
        sender_id=clean_line(message.sender_id),
        text=clean_text(message.text),
        sender_name=name,
        reply_to=clean_line(message.reply_to) if message.reply_to is not None else None,
        meta=MappingProxyType(_clean_value(dict(message.meta))),
    )


def clean_text(text: str) -> str:
    """Valid Unicode without control characters but tab and newline; `\\r\\n` and `\\r` become `\\n`."""
    return _CONTROL.sub("", _LINE_BREAKS.sub("\n", _whole(text)))


def clean_line(text: str) -> str:
    """One line of valid Unicode: control characters and line breaks become one space."""
    return _NOT_ONE_LINE.sub(" ", _whole(text))


def _whole(text: str) -> str:
    """Surrogate pairs joined into their character, lone surrogates replaced by U+FFFD."""
    if not _SURROGATE.search(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _clean_value(value: Any) -> Any:
    if isinstance(value, str):
        return clean_line(value)
    if isinstance(value, Mapping):
        return {clean_line(str(k)): _clean_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean_value(v) for v in value]
    return value


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float  # when `tokens` was last brought up to date
    dropped: int = 0  # messages refused in the current limited stretch (0: not limited)


class SenderLimits:
    """A token bucket per sender: `burst` messages at once, then `per_minute` a minute.

    Buckets are kept in the order their senders were last seen; each `take` forgets the
    oldest ones that are full again (idle senders) and, past `max_senders`, the oldest of
    all, so memory follows the senders active in the last `burst / rate` seconds.
    """

    def __init__(
        self,
        *,
        burst: int,
        per_minute: float,
        max_senders: int = MAX_SENDERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if burst < 1 or per_minute <= 0 or max_senders < 1:
            raise ValueError("burst, per_minute and max_senders must be positive")
        self.burst = float(burst)
        self.rate = per_minute / 60.0  # tokens a second
        self.max_senders = max_senders
        self._clock = clock
        self._buckets: OrderedDict[Key, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: Key) -> Take:
        """Spend one of the sender's tokens: "ok", or why not ("limited" once per stretch)."""
        now = self._clock()
        bucket = self._buckets.pop(key, None)
        self._forget_idle(now)
        if bucket is None:
            bucket = _Bucket(self.burst, now)
        else:
            self._refill(key, bucket, now)
        self._buckets[key] = bucket  # now the most recently seen
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return "ok"
        bucket.dropped += 1
        if bucket.dropped == 1:
            log.info("sender rate-limited", extra={"channel": key[0], "sender_id": key[1]})
            return "limited"
        return "dropped"

    def _refill(self, key: Key, bucket: _Bucket, now: float) -> None:
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.dropped and bucket.tokens >= self.burst:
            _stretch_ended(key, bucket)

    def _forget_idle(self, now: float) -> None:
        """Drop the least recently seen buckets that are full again, and any beyond the bound
        (making room for one more). Each bucket is dropped once: amortized O(1) per take."""
        while self._buckets:
            key, bucket = next(iter(self._buckets.items()))
            full = bucket.tokens + (now - bucket.at) * self.rate >= self.burst
            if not full and len(self._buckets) < self.max_senders:
                return
            del self._buckets[key]
            _stretch_ended(key, bucket)


def _stretch_ended(key: Key, bucket: _Bucket) -> None:
    if bucket.dropped:
        log.info(
            "sender no longer rate-limited",
            extra={"channel": key[0], "sender_id": key[1], "dropped": bucket.dropped},
        )
        bucket.dropped = 0


class Intake:
    """The gateway's limits on what it lets in: owned by one Gateway, state in memory only."""

    def __init__(
        self,
        *,
        max_chars: int,
        language: Language,
        limits: SenderLimits | None,
    ) -> None:
        self.max_chars = max_chars
        self.language = language
        self.limits = limits  # None: no rate limit

    @classmethod
    def from_config(cls, config: Config, language: Language) -> Intake:
        gateway = config.gateway
        limits = (
            SenderLimits(burst=gateway.rate_limit_burst, per_minute=gateway.rate_limit_per_minute)
            if gateway.rate_limit_per_minute > 0
            else None
        )
        return cls(max_chars=config.assistant.max_message_chars, language=language, limits=limits)

    def admit(self, message: Inbound) -> Verdict:
        """Whether a (cleaned, access-allowed) message goes on to the inbox, and if not, the
        answer it gets (None: none)."""
        if self.limits is not None:
            taken = self.limits.take((message.channel, message.sender_id))
            if taken == "limited":
                return Verdict(False, "rate_limited", say(self.language, "rate_limited"))
            if taken == "dropped":
                return Verdict(False, "rate_limited_quiet")
        length = len(message.text)
        if length > self.max_chars:
            answer = say(self.language, "too_long", length=length, limit=self.max_chars)
            return Verdict(False, "too_long", answer)
        return Verdict(True, "within_limits")
