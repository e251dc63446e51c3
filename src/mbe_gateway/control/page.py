"""The control page at GET /: one self-contained HTML file (page/index.html), strict headers.

The page holds no data, so loading it needs no token: the owner types one into its form and
the page speaks the control protocol over /ws like any other client. Its one script and one
style sheet are inline, so the Content-Security-Policy allows exactly those two by their SHA-256
hashes: anything else inline (an injected <script>, an onclick attribute) does not run. The
words it shows come from texts.py (the `page_*` keys, both languages) as a JSON data block,
which is not executed and so needs no hash; the daemon's language is the page's default.

Built once per server, when it starts: serving the page is handing out the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import Final

from mbe_gateway.texts import TEXTS, Language

TEXTS_MARK: Final = "__PAGE_TEXTS__"
_EXECUTED: Final = re.compile(r"<script>(.*?)</script>", re.DOTALL)  # no type: JavaScript
_STYLE: Final = re.compile(r"<style>(.*?)</style>", re.DOTALL)
_HOST: Final = re.compile(r"[A-Za-z0-9.\-]+(:\d+)?|\[[0-9A-Fa-f:.]+\](:\d+)?")


@dataclass(frozen=True)
class Page:
    body: bytes
    script_hash: str  # CSP source expressions: 'sha256-...'
    style_hash: str

    def headers(self, host: str) -> dict[str, str]:
        """The response headers for a request to `host` (its Host header, already checked)."""
        # 'self' covers ws: to the same host in CSP 3; the explicit sources are for older engines.
        sockets = f" ws://{host} wss://{host}" if _HOST.fullmatch(host) else ""
        policy = "; ".join(
            (
                "default-src 'self'",
                f"script-src {self.script_hash}",
                f"style-src {self.style_hash}",
                "img-src 'self' data:",
                f"connect-src 'self'{sockets}",
                "object-src 'none'",
                "base-uri 'none'",
                "form-action 'none'",
                "frame-ancestors 'none'",
            )
        )
        return {
            "Content-Type": "text/html; charset=utf-8",
            "Content-Security-Policy": policy,
            "X-Frame-Options": "DENY",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
            "Cross-Origin-Opener-Policy": "same-origin",
            "Cross-Origin-Resource-Policy": "same-origin",
        }


def load(language: Language) -> Page:
    """The page with its words, `language` first; its inline script and style hashed."""
    html = (resources.files("mbe_gateway.control") / "page" / "index.html").read_text("utf-8")
    scripts, styles = _EXECUTED.findall(html), _STYLE.findall(html)
    # One of each, and no other script element but the texts: the policy allows just these.
    if len(scripts) != 1 or len(styles) != 1 or html.count("<script") != 2:
        raise RuntimeError("page/index.html must hold one <script>, one <style> and the texts block")
    words = {code: {k: v for k, v in said.items() if k.startswith("page_")} for code, said in TEXTS.items()}
    texts = {"language": language, "texts": words}
    # In a data block "</script>" would end it early: escape every "<" (JSON reads \u003c back).
    data = json.dumps(texts, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    body = html.replace(TEXTS_MARK, data, 1)
    return Page(body=body.encode(), script_hash=_sha256(scripts[0]), style_hash=_sha256(styles[0]))


def _sha256(source: str) -> str:
    digest = base64.b64encode(hashlib.sha256(source.encode()).digest()).decode()
    return f"'sha256-{digest}'"
