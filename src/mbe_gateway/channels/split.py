"""Long replies cut into messages a platform accepts, at the seams a reader expects.

Cuts fall between paragraphs where possible, else between lines, else between words, and
only as a last resort inside a word. A fenced code block that must be cut is closed at the
end of one part and reopened, with its language, at the start of the next, so every part
renders on its own. Lengths are measured by the caller's `measure`, which converts to the
platform's flavour first: escaping grows text (`<` becomes `&lt;`), so counting the Markdown
would overshoot the limit.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

Measure = Callable[[str], int]

_FENCE = re.compile(r"^(`{3,}|~{3,})(.*)$")


@dataclass(frozen=True, slots=True)
class _Block:
    text: str
    fence: str = ""  # the opening fence line of a code block ("```py"); "" for prose

    @property
    def closing(self) -> str:
        """The fence that ends the block: the opening one's run of backticks or tildes."""
        return self.fence[: len(self.fence) - len(self.fence.lstrip(self.fence[:1]))]


def split_markdown(text: str, limit: int, measure: Measure = len) -> list[str]:
    """Parts of `text`, in order, each with `measure(part) <= limit`; [] for blank text."""
    if limit < 16:
        raise ValueError(f"a limit of {limit} leaves no room to split sensibly")
    text = text.strip("\n")
    if not text.strip():
        return []
    if measure(text) <= limit:
        return [text]
    parts: list[str] = []
    current = ""
    for piece in _pieces(_blocks(text), limit, measure):
        candidate = f"{current}\n\n{piece}" if current else piece
        if measure(candidate) <= limit:
            current = candidate
        else:
            if current:
                parts.append(current)
            current = piece
    if current:
        parts.append(current)
    return parts


def _blocks(text: str) -> list[_Block]:
    """Paragraphs and fenced code blocks (an unclosed fence runs to the end, as renderers do)."""
    blocks: list[_Block] = []
    paragraph: list[str] = []
    lines = iter(text.split("\n"))

    def end_paragraph() -> None:
        if paragraph:
            blocks.append(_Block("\n".join(paragraph)))
            paragraph.clear()

    for line in lines:
        opening = _FENCE.match(line)
        if opening:
            end_paragraph()
            marker = opening.group(1)
            body: list[str] = []
            for inner in lines:
                if inner.strip().startswith(marker) and not inner.strip().strip(marker[0]):
                    break
                body.append(inner)
            blocks.append(_Block("\n".join(body), fence=line.rstrip()))
        elif line.strip():
            paragraph.append(line)
        else:
            end_paragraph()
    end_paragraph()
    return blocks


def _render(block: _Block, body: str) -> str:
    return f"{block.fence}\n{body}\n{block.closing}" if block.fence else body


def _pieces(blocks: list[_Block], limit: int, measure: Measure) -> Iterator[str]:
    """Each block whole if it fits, else cut into pieces that each fit."""
    for block in blocks:
        whole = _render(block, block.text)
        if measure(whole) <= limit:
            yield whole
            continue
        yield from _cut(block, limit, measure)


def _cut(block: _Block, limit: int, measure: Measure) -> Iterator[str]:
    """Fill pieces line by line; a line too long on its own is cut by words, then by characters."""
    current: list[str] = []
    for line in block.text.split("\n"):
        if measure(_render(block, "\n".join([*current, line]))) <= limit:
            current.append(line)
            continue
        if current:
            yield _render(block, "\n".join(current))
            current = []
        if measure(_render(block, line)) <= limit:
            current = [line]
            continue
        *full, rest = _cut_line(block, line, limit, measure)
        yield from (_render(block, piece) for piece in full)
        current = [rest]
    if current:
        yield _render(block, "\n".join(current))


def _cut_line(block: _Block, line: str, limit: int, measure: Measure) -> list[str]:
    """A single over-long line as pieces that fit; words are kept whole where they fit alone.

    Prose is cut only at spaces (the space is kept with the left piece, so nothing is lost);
    code keeps its exact characters, so it is cut wherever the limit falls.
    """
    tokens = re.findall(r"\S+\s*|\s+", line) if not block.fence else list(line)
    pieces: list[str] = []
    current = ""
    for token in tokens:
        if measure(_render(block, current + token)) <= limit:
            current += token
            continue
        if current:
            pieces.append(current)
            current = ""
        while measure(_render(block, token)) > limit:
            head = _longest_fitting_prefix(block, token, limit, measure)
            pieces.append(head)
            token = token[len(head) :]
        current = token
    pieces.append(current)
    return pieces


def _longest_fitting_prefix(block: _Block, text: str, limit: int, measure: Measure) -> str:
    low, high = 1, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if measure(_render(block, text[:middle])) <= limit:
            low = middle
        else:
            high = middle - 1
    return text[:low]
