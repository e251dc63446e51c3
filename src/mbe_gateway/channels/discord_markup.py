"""Common Markdown as Discord renders it, and as plain text Discord shows literally.

Discord's Markdown is close to common Markdown but not the same, and the differences are
where a reply (or hostile text echoed in one) goes wrong:

- `__x__` is bold in Markdown but *underline* in Discord, and Discord underlines even
  inside words (`snake__case__name`): paired runs become `**x**`, stray ones are escaped.
- Only `#` to `###` headings exist; deeper ones become a bold line. `>>> ` quotes the whole
  rest of a message and nested quotes do not exist: any `>` run becomes one `> `.
- `||x||` hides text (a spoiler), `~~~` fences and tables do not exist, images are not
  shown: spoiler bars are escaped, fences become backticks, tables go in a code block (so
  their columns line up), `![alt](url)` becomes a link.
- `@everyone` and `@here` would ping a whole server. The sender also sets allowed_mentions
  so nothing pings; a zero-width space here keeps the text from even looking like a ping.

Code (fenced blocks and inline spans) and URLs are left exactly as written. HTML means
nothing to Discord, so `<b>` and `&` are shown as typed. Discord counts a message's length
in code points (its API is Python: discord-api-docs#1315), so `len` is the measure.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Generator, Iterator
from typing import Final

ZWSP: Final = "\u200b"

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
_DEEP_HEADING = re.compile(r"^ {0,3}#{4,}\s+(.*?)(?:\s+#+)?\s*$")
_QUOTE_RUN = re.compile(r"^(\s*)>(?:\s*>)*[ \t]?")
# Inline pieces kept verbatim: code spans, autolinks and bare URLs (a `__` in a URL is not bold).
_URL = r"<https?://[^\s>]+>|https?://[^\s<>()]+"
_VERBATIM = re.compile(r"(`+)[^`\n](?:[^\n]*?[^`\n])??\1(?!`)|" + _URL)
_URL_ONLY = re.compile(_URL)
_SLOT = re.compile("\ue000(\\d+)\ue001")
_STRONG_UNDERSCORES = re.compile(r"(?<![\w\\])__(?=\S)(.+?)(?<=\S)__(?!\w)")
_STRAY_UNDERSCORES = re.compile(r"(?<!\\)__+")
_MASS_MENTION = re.compile(r"@(everyone|here)")  # no word boundary: "@everyonea" must not read as one
_IMAGE = re.compile(r"!\[([^\]\n]*)\]\(")
# Plain text: every character Discord's Markdown gives a meaning to, escaped with a backslash.
_PLAIN_ANYWHERE = re.compile(r"([\\*_~`|\[\]])")
_PLAIN_LINE_START = re.compile(r"^(\s*)([>#-])", re.MULTILINE)


def to_discord(markdown: str) -> str:
    """Common Markdown rewritten in Discord's flavour (see the module docstring)."""
    return "\n".join(_converted(markdown.split("\n")))


def to_plain(markdown: str) -> str:
    """The text with every Markdown character escaped (URLs aside, or they would stop working),
    so Discord shows it exactly as written."""
    escaped = _with_kept(_URL_ONLY, markdown, _escaped)
    return _PLAIN_LINE_START.sub(r"\1\\\2", escaped)


def measure(markdown: str) -> int:
    """The length a part can take on Discord: the longer of its two forms, so that a part that
    fits can always be resent as plain text if Discord refuses the formatted one."""
    return max(len(to_discord(markdown)), len(to_plain(markdown)))


def _converted(lines: list[str]) -> Iterator[str]:
    index = 0
    while index < len(lines):
        line = lines[index]
        fence = _FENCE.match(line)
        if fence:
            index = yield from _code_block(lines, index, fence.group(1), fence.group(2))
        elif _is_table_start(lines, index):
            yield "```"
            while index < len(lines) and _TABLE_ROW.match(lines[index]):
                yield lines[index].replace("```", "`\u200b``")
                index += 1
            yield "```"
        else:
            yield _prose_line(line)
            index += 1


def _code_block(lines: list[str], start: int, marker: str, info: str) -> Generator[str, None, int]:
    """Yield one fenced block with backtick fences (Discord knows no `~~~`); the next index."""
    yield "```" + info.strip()
    index = start + 1
    while index < len(lines):
        line = lines[index]
        stripped = line.strip()
        if stripped.startswith(marker) and not stripped.strip(marker[0]):
            index += 1
            break
        # A backtick fence inside a tilde block would end the block early in Discord.
        yield line.replace("```", "`\u200b``") if marker[0] == "~" else line
        index += 1
    yield "```"
    return index


def _is_table_start(lines: list[str], index: int) -> bool:
    return (
        index + 1 < len(lines)
        and _TABLE_ROW.match(lines[index]) is not None
        and _TABLE_RULE.match(lines[index + 1]) is not None
    )


def _prose_line(line: str) -> str:
    heading = _DEEP_HEADING.match(line)
    if heading:
        line = f"**{heading.group(1)}**" if heading.group(1) else ""
    line = _QUOTE_RUN.sub(lambda m: f"{m.group(1)}> ", line, count=1)
    return _with_kept(_VERBATIM, line, _inline)


def _inline(text: str) -> str:
    text = _IMAGE.sub(r"[\1](", text)
    text = _STRONG_UNDERSCORES.sub(r"**\1**", text)
    text = _STRAY_UNDERSCORES.sub(lambda m: "\\_" * len(m.group(0)), text)
    text = text.replace("||", r"\|\|")
    return _MASS_MENTION.sub(f"@{ZWSP}\\1", text)


def _escaped(text: str) -> str:
    return _MASS_MENTION.sub(f"@{ZWSP}\\1", _PLAIN_ANYWHERE.sub(r"\\\1", text))


def _with_kept(verbatim: re.Pattern[str], text: str, transform: Callable[[str], str]) -> str:
    """Apply `transform` to the text with the `verbatim` matches held aside, then put them back.

    The placeholders are private-use characters; any already in the text are replaced first,
    so hostile input cannot forge one.
    """
    kept: list[str] = []

    def hold(match: re.Match[str]) -> str:
        kept.append(match.group(0))
        return f"\ue000{len(kept) - 1}\ue001"

    held = verbatim.sub(hold, text.replace("\ue000", "\ufffd").replace("\ue001", "\ufffd"))
    return _SLOT.sub(lambda m: kept[int(m.group(1))], transform(held))
