"""Common Markdown as Telegram HTML, and cut into messages Telegram accepts.

Telegram's HTML parse mode is the flavour that is easy to get right: outside tags only `<`,
`>` and `&` need escaping, so hostile text (`<b>`, a stray `&`, an unbalanced `*`) cannot
change the markup. The Markdown is parsed by markdown-it (CommonMark, raw HTML off, so a
`<b>` someone typed stays text) and each node is rendered as one of the tags Telegram knows.

Links keep only http(s) and mailto targets: a `tg://user?id=…` link would mention (and ping)
an arbitrary user, and Telegram rejects schemes it does not know. Telegram counts a message's
length in UTF-16 code units of the text *after* entity parsing, so parts are measured on the
visible text, not on the HTML.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode

from mbe_gateway.channels.split import split_markdown

MAX_LENGTH: Final = 4096  # UTF-16 code units of a message's visible text
_LINK_SCHEMES: Final = frozenset({"http", "https", "mailto"})
_TAG: Final = re.compile(r"<[^>]*>")
_LANGUAGE: Final = re.compile(r"[A-Za-z0-9_+#.-]{1,32}")
_PARSER: Final = MarkdownIt("commonmark", {"html": False}).enable("strikethrough")


@dataclass(frozen=True, slots=True)
class Part:
    """One message: its HTML, and the same text without markup for when Telegram refuses the HTML."""

    html: str
    plain: str


def to_html(markdown: str) -> str:
    """The Markdown as Telegram HTML (every character of the input that is text stays text)."""
    tree = SyntaxTreeNode(_PARSER.parse(markdown))
    return _Blocks(markdown).join(tree.children, in_quote=False).strip()


def visible_text(telegram_html: str) -> str:
    """What Telegram shows for HTML made by `to_html`: the tags gone, the entities decoded."""
    return html.unescape(_TAG.sub("", telegram_html))


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def telegram_parts(markdown: str) -> list[Part]:
    """The reply as messages, in order, each within Telegram's limit; blank parts dropped."""
    parts: list[Part] = []
    for piece in split_markdown(markdown, MAX_LENGTH, _Measure()):
        rendered = to_html(piece)
        plain = visible_text(rendered)
        if plain.strip():
            parts.append(Part(rendered, plain))
    return parts


class _Measure:
    """The length Telegram would count for a piece of Markdown, for one `split_markdown` call.

    Rendering only ever removes characters (markers, fences, link targets, escapes) or swaps
    one for one (`-` for `•`), so the written length is an upper bound of the rendered one,
    and an upper bound is all the splitter needs to keep every part within the limit. A piece
    that fits as written is not converted at all; a longer one is converted (to pack parts
    fuller) only a few times per reply, because the splitter asks again with each added word
    and each conversion of a 4096-unit text costs milliseconds of the event loop.
    """

    def __init__(self, conversions: int = 4) -> None:
        self._left = conversions

    def __call__(self, markdown: str) -> int:
        written = utf16_len(markdown)
        if written <= MAX_LENGTH or written > 2 * MAX_LENGTH or self._left <= 0:
            return written
        self._left -= 1
        return utf16_len(visible_text(to_html(markdown)))


class _Blocks:
    """Renders block nodes; keeps the source lines to see where the Markdown had blank lines."""

    def __init__(self, markdown: str) -> None:
        self._lines = markdown.splitlines()

    def join(self, nodes: list[SyntaxTreeNode], *, in_quote: bool) -> str:
        """Blocks apart by a blank line, or by a line break where the Markdown had no blank line
        between them: rendering never adds lines (which the length bound in `_Measure` needs)."""
        out: list[str] = []
        for node in nodes:
            text = self.block(node, in_quote=in_quote)
            if text:
                if out:
                    out.append("\n\n" if self._after_blank_line(node) else "\n")
                out.append(text)
        return "".join(out)

    def _after_blank_line(self, node: SyntaxTreeNode) -> bool:
        if node.map is None or node.map[0] == 0:
            return True
        return not self._lines[node.map[0] - 1].strip(" \t>")

    def block(self, node: SyntaxTreeNode, *, in_quote: bool) -> str:
        kind = node.type
        if kind == "paragraph":
            return _inline(node.children[0], in_link=False) if node.children else ""
        if kind == "heading":
            inner = _inline(node.children[0], in_link=False) if node.children else ""
            return f"<b>{inner}</b>" if inner else ""
        if kind in ("bullet_list", "ordered_list"):
            return self.list(node, indent="", in_quote=in_quote)
        if kind == "blockquote":
            inner = self.join(node.children, in_quote=True)
            # Telegram cannot nest quotes: an inner quote is just more of the outer one.
            return inner if in_quote or not inner else f"<blockquote>{inner}</blockquote>"
        if kind in ("fence", "code_block"):
            return _pre(node.content.removesuffix("\n"), next(iter(node.info.split()), ""))
        if kind == "hr":
            return "———"
        return _escape(node.content)

    def list(self, node: SyntaxTreeNode, *, indent: str, in_quote: bool) -> str:
        """Items one per line, marked `•` or with their own number (as written, so lengths never
        grow); a nested list is indented under its item's text."""
        items: list[str] = []
        for item in node.children:
            marker = "•" if node.type == "bullet_list" else f"{item.info}{item.markup}"
            inner_indent = indent + " " * (len(marker) + 1)
            pieces = [
                self.list(child, indent=inner_indent, in_quote=in_quote)
                if child.type in ("bullet_list", "ordered_list")
                else self.block(child, in_quote=in_quote)
                for child in item.children
            ]
            body = "\n".join(piece for piece in pieces if piece)
            if item.children and item.children[0].type in ("bullet_list", "ordered_list"):
                body = body.lstrip(" ")
            items.append(f"{indent}{marker} {body}" if body else f"{indent}{marker}")
        return "\n".join(items)


def _pre(code: str, language: str) -> str:
    if not code:
        return ""
    if _LANGUAGE.fullmatch(language):
        return f'<pre><code class="language-{language}">{_escape(code)}</code></pre>'
    return f"<pre>{_escape(code)}</pre>"


def _inline(node: SyntaxTreeNode, *, in_link: bool) -> str:
    out: list[str] = []
    for child in node.children:
        kind = child.type
        if kind in ("softbreak", "hardbreak"):
            out.append("\n")
        elif kind == "code_inline":
            # Telegram does not allow code inside a link: there it stays plain text.
            code = _escape(child.content)
            out.append(code if in_link else f"<code>{code}</code>")
        elif kind in ("strong", "em", "s"):
            tag = {"strong": "b", "em": "i", "s": "s"}[kind]
            out.append(f"<{tag}>{_inline(child, in_link=in_link)}</{tag}>")
        elif kind == "link":
            out.append(_link(str(child.attrs.get("href", "")), _inline(child, in_link=True), in_link))
        elif kind == "image":
            out.append(_link(str(child.attrs.get("src", "")), _escape(child.content), in_link))
        else:
            out.append(_escape(child.content))
    return "".join(out)


def _link(target: str, inner: str, in_link: bool) -> str:
    if in_link or not inner or not _linkable(target):
        return inner
    return f'<a href="{html.escape(target, quote=True)}">{inner}</a>'


def _linkable(target: str) -> bool:
    try:
        parts = urlsplit(target)
    except ValueError:  # e.g. an unbalanced "[" in the host
        return False
    if parts.scheme.lower() not in _LINK_SCHEMES:
        return False
    return bool(parts.netloc) or parts.scheme.lower() == "mailto"


def _escape(text: str) -> str:
    return html.escape(text, quote=False)
