"""Long replies are cut where a reader expects, and every part renders on its own."""

from __future__ import annotations

import html

from hypothesis import given, settings
from hypothesis import strategies as st

from mbe_gateway.channels.split import split_markdown


def visible(text: str) -> str:
    """The characters a reader sees, in order: splitting may only move whitespace."""
    return "".join(text.split())


def test_a_short_reply_is_one_part() -> None:
    assert split_markdown("Hello there.", 100) == ["Hello there."]


def test_blank_text_is_no_parts() -> None:
    assert split_markdown("\n  \n", 100) == []


def test_paragraphs_stay_whole_and_in_order() -> None:
    paragraphs = [f"Paragraph {i}: " + "word " * 8 for i in range(6)]
    parts = split_markdown("\n\n".join(p.strip() for p in paragraphs), 120)
    assert len(parts) > 1
    assert all(len(part) <= 120 for part in parts)
    rejoined = "\n\n".join(parts)
    assert [line for line in rejoined.split("\n\n")] == [p.strip() for p in paragraphs]


def test_a_long_paragraph_is_cut_between_lines_then_words() -> None:
    text = "\n".join(f"line {i} " + "x" * 20 for i in range(10)) + "\n" + "word " * 60
    parts = split_markdown(text, 80)
    assert all(len(part) <= 80 for part in parts)
    assert visible("".join(parts)) == visible(text)
    assert all(part.split()[-1] in ("x" * 20, "word") for part in parts)


def test_a_cut_code_block_is_closed_and_reopened_with_its_language() -> None:
    code = "\n".join(f"print({i})" for i in range(40))
    parts = split_markdown(f"Here:\n\n```python\n{code}\n```\n\nDone.", 100)
    blocks = [p for p in parts if "print(" in p]
    assert len(blocks) > 1
    for part in blocks:
        assert "```python\n" in part
        fences = [line for line in part.split("\n") if line.startswith("```")]
        assert len(fences) % 2 == 0, f"unbalanced fences in {part!r}"
    body = [line for p in blocks for line in p.split("\n") if line.startswith("print(")]
    assert body == code.split("\n")


def test_the_limit_holds_for_the_converted_length_not_the_markdown() -> None:
    text = "<b>&amp;</b> " * 200
    parts = split_markdown(text, 100, measure=lambda s: len(html.escape(s)))
    assert all(len(html.escape(part)) <= 100 for part in parts)
    assert " ".join(parts).split() == text.split()


def test_a_word_longer_than_the_limit_is_cut_without_losing_characters() -> None:
    word = "ab" * 150
    parts = split_markdown(word, 50)
    assert all(len(part) <= 50 for part in parts)
    assert "".join(parts) == word


def test_utf16_measure_keeps_emoji_and_chinese_whole() -> None:
    text = "你好世界😀" * 300
    utf16 = lambda s: len(s.encode("utf-16-le")) // 2  # noqa: E731
    parts = split_markdown(text, 100, measure=utf16)
    assert all(utf16(part) <= 100 for part in parts)
    assert "".join(parts) == text


prose = st.text(alphabet=st.sampled_from(list("abc xyz\n你好😀.*_")), min_size=1, max_size=2000)


@settings(max_examples=200, deadline=None)
@given(text=prose, limit=st.integers(min_value=16, max_value=300))
def test_any_prose_splits_within_the_limit_and_keeps_every_word(text: str, limit: int) -> None:
    parts = split_markdown(text, limit)
    assert all(len(part) <= limit for part in parts)
    assert visible("".join(parts)) == visible(text)
