"""Common Markdown to Slack's mrkdwn and back: what Slack shows is what the model wrote.

Slack's `text` field is not Markdown. It uses `*bold*`, `_italic_`, `~strike~`, `<url|label>`,
and treats `&`, `<` and `>` as control characters: `<!channel>`, `<!here>` or `<@U123>` in
a message notify people. So outbound text is converted construct by construct, and every
character that is not our own markup is escaped (`&amp;`, `&lt;`, `&gt;`): a model that
writes `<!channel>` shows those characters and pings nobody. Plain `@here`, `@channel` and
`@everyone` get an invisible word joiner after the `@`, so even a Slack that auto-linked
them (it does not with `link_names` off, which we send) could not turn them into a ping.

Slack has no escape for `*`, `_`, `~` or a backtick: a marker that is not part of a Markdown
construct is kept as typed (Slack, like Markdown, leaves unpaired or in-word markers alone).

`length_bound` gives, in linear time, an upper bound on the converted length, for the splitter
to measure with: converting can only shrink text except where it escapes, neutralizes a
mention or closes a fence, and those are counted. (Converting exactly on every measurement
would make splitting a long reply quadratic in the converter's cost.)

Inbound, `from_slack` turns a message's text back into what the person typed: entities
decoded, links and mentions shown as text, the bot's own mention removed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Final

_SPAN: Final = 400  # the longest emphasized or linked span we convert (bounds regex work)

_FENCE: Final = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_HEADING: Final = re.compile(r"^ {0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$")
_BULLET: Final = re.compile(r"^(\s*)[-*+]\s+(.*)$")
_QUOTE: Final = re.compile(r"^ {0,3}>\s?(.*)$")
_RULE: Final = re.compile(r"^ {0,3}(?:(?:\*\s*){3,}|(?:-\s*){3,}|(?:_\s*){3,})$")
_INLINE: Final = re.compile(
    r"\\(?P<escaped>[!-/:-@\[-`{-~])"
    rf"|(?P<ticks>`+)(?P<code>[^\n]{{1,{_SPAN}}}?)(?P=ticks)"
    rf"|\[(?P<label>[^\]\n]{{1,{_SPAN}}})\]\((?P<url>[^\s()]{{1,2000}})\)"
    r"|<(?P<auto>(?:https?|mailto):[^\s<>]{1,2000})>"
    rf"|\*\*(?=\S)(?P<strong>[^\n]{{1,{_SPAN}}}?)(?<=\S)\*\*"
    rf"|(?<!\w)__(?=\S)(?P<strong_>[^\n]{{1,{_SPAN}}}?)(?<=\S)__(?!\w)"
    rf"|~~(?=\S)(?P<strike>[^\n]{{1,{_SPAN}}}?)(?<=\S)~~"
    rf"|(?<![\w*])\*(?=[^\s*])(?P<em>[^\n]{{1,{_SPAN}}}?)(?<=[^\s*])\*(?![\w*])"
    rf"|(?<!\w)_(?=[^\s_])(?P<em_>[^\n]{{1,{_SPAN}}}?)(?<=[^\s_])_(?!\w)"
)
_MENTION_WORD: Final = re.compile(r"@(?=(?:here|channel|everyone)\b)", re.IGNORECASE)
_WORD_JOINER: Final = "\u2060"
_LINK_SCHEMES: Final = ("http://", "https://", "mailto:")

# Inbound: Slack's control sequences, <...>, in a message's text.
_CONTROL: Final = re.compile(r"<([^<>\n]*)>")


def escape(text: str) -> str:
    """Slack's three control characters as entities; nothing else is touched."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _literal(text: str) -> str:
    """Text shown as typed: escaped, with broadcast words unable to ping."""
    return _MENTION_WORD.sub("@" + _WORD_JOINER, escape(text))


def to_mrkdwn(markdown: str) -> str:
    """Common Markdown as Slack mrkdwn; see the module docstring for what is escaped."""
    return "\n".join(_lines(markdown.split("\n")))


def to_plain(markdown: str) -> str:
    """The text exactly as written, for `mrkdwn: false` (the fallback when markup is refused)."""
    return _literal(markdown)


def length_bound(markdown: str) -> int:
    """An upper bound on len(to_mrkdwn(markdown)) and len(to_plain(markdown)), in linear time."""
    has_fence = any(_FENCE.match(line) for line in markdown.split("\n"))
    return (
        len(markdown)
        + 4 * markdown.count("&")
        + 3 * (markdown.count("<") + markdown.count(">"))
        + 2 * markdown.count("|")  # "%7C" in a link's address
        + markdown.count("@")  # a word joiner after a broadcast word's @
        + markdown.count("```")  # a zero-width space that keeps a fence inside code from closing it
        + (4 if has_fence else 0)  # the closing fence of a block left open
    )


def _lines(lines: list[str]) -> Iterator[str]:
    fence = ""
    for line in lines:
        if fence:
            if line.strip() and line.strip().strip(fence[0]) == "" and len(line.strip()) >= len(fence):
                fence = ""
                yield "```"
            else:
                yield escape(line).replace("```", "``\u200b`")
            continue
        opening = _FENCE.match(line)
        if opening:
            fence = opening.group(1)
            yield "```"  # Slack shows a language name as code, so it is dropped
        else:
            yield _block_line(line)
    if fence:
        yield "```"


def _block_line(line: str) -> str:
    """One line of prose: headings, bullets and quotes, then its inline markup."""
    if _RULE.match(line):
        return escape(line.strip())
    heading = _HEADING.match(line)
    if heading:
        title = _inline(heading.group(1))
        return f"*{title}*" if title and "*" not in title else title
    bullet = _BULLET.match(line)
    if bullet:
        return f"{bullet.group(1)}• {_inline(bullet.group(2))}"
    quote = _QUOTE.match(line)
    if quote:
        return f"> {_inline(quote.group(1))}"  # a raw ">" at line start is Slack's quote
    return _inline(line)


def _inline(text: str) -> str:
    out: list[str] = []
    position = 0
    for match in _INLINE.finditer(text):
        out.append(_literal(text[position : match.start()]))
        out.append(_construct(match))
        position = match.end()
    out.append(_literal(text[position:]))
    return "".join(out)


def _construct(match: re.Match[str]) -> str:
    group = match.groupdict()
    if group["escaped"] is not None:
        # "\@everyone": the @ stands alone here, so _literal cannot see the word that follows.
        if group["escaped"] == "@" and _MENTION_WORD.match("@" + match.string[match.end() :]):
            return "@" + _WORD_JOINER
        return _literal(group["escaped"])
    if group["code"] is not None:
        code = group["code"].strip(" ") or group["code"]
        # Slack's inline code cannot hold a backtick: such code is shown as plain text.
        return escape(code) if "`" in code else f"`{escape(code)}`"
    if group["label"] is not None:
        return _link(group["url"], group["label"])
    if group["auto"] is not None:
        return _link(group["auto"], None)
    for name, marker in (("strong", "*"), ("strong_", "*"), ("strike", "~"), ("em", "_"), ("em_", "_")):
        body = group[name]
        if body is not None:
            return f"{marker}{_inline(body)}{marker}"
    raise AssertionError(f"unhandled inline construct {match.group(0)!r}")


def _link(url: str, label: str | None) -> str:
    """`<url|label>` for web and mail links; anything else stays readable text, never a link."""
    if not url.lower().startswith(_LINK_SCHEMES):
        return _literal(f"{label} ({url})" if label else url)
    target = escape(url.replace("|", "%7C"))
    if label is None or label == url:
        return f"<{target}>"
    return f"<{target}|{_literal(label)}>"


def from_slack(text: str, bot_user_id: str = "") -> str:
    """A message's text as the person typed it, without the bot's own mention."""
    if bot_user_id:
        ours = rf"<@{re.escape(bot_user_id)}(?:\|[^<>]*)?>"
        text = re.sub(rf"^\s*{ours}[\s:,]*", "", text)  # "@bot: question" is the question
        text = re.sub(rf"[ \t]*{ours}", "", text)

    def control(match: re.Match[str]) -> str:
        target, _, label = match.group(1).partition("|")
        if target.startswith("@"):
            return "@" + (label or target[1:])
        if target.startswith("#"):
            return "#" + (label or target[1:])
        if target.startswith("!"):
            command = target[1:].split("^", 1)[0]
            if command in ("here", "channel", "everyone"):
                return "@" + command
            return label or command
        if label and label != target and target.removeprefix("mailto:") != label:
            return f"{label} ({target})"
        return target.removeprefix("mailto:")

    plain = _CONTROL.sub(control, text).strip()
    return plain.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
