"""Text analysis shared by every tool: normalise, then split into terms for both languages.

One function, `terms`, turns a message into the terms the engine indexes, searches and
compares, so a memory, a query, a past message and an expert's keywords always meet on
the same ground:

- NFKC then casefold: full-width ＡＢＣ and ａｂｃ are abc, "Straße" is "strasse".
- English (and other space-separated scripts): words, stopwords dropped, ASCII words
  Porter-stemmed (peanuts → peanut, allergic → allerg), accents folded (café → cafe).
- Chinese (and Japanese kana, Korean hangul): every character and every pair of
  neighbouring characters. "我对花生过敏" gives 花, 生, 敏, 对花, 花生, 生过, 过敏 (我, 对,
  过 are function characters). Pairs find the two-character words Chinese is mostly made
  of, wherever the word boundaries are; single characters find a word written with a
  different neighbour (我家猫 / 我的猫, 上学 / 上小学). This beat jieba word
  segmentation and SQLite's trigram tokenizer on our bilingual recall set, needs no
  dictionary, and costs nothing at start: docs/mbe-contract.md, "Engine notes".

The terms contain only word characters, so SQLite's `unicode61` tokenizer keeps each one
as one token when the joined terms are put into an FTS5 index.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator

from mbe_gateway.engine.stem import stem
from mbe_gateway.engine.stopwords import CHINESE_CHARS, CHINESE_PARTICLES, CHINESE_WORDS, ENGLISH

# Scripts written without spaces between words: CJK ideographs (with extensions and
# compatibility forms), Japanese kana, Korean hangul syllables.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\U00020000-\U0002ffff"
_HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff]")
_SEGMENTS = re.compile(rf"([{_CJK}]+)|([^\W_{_CJK}]+)")
_ASCII_WORD = re.compile("[a-z]+")
_LATIN_WORD = re.compile(r"[a-zA-Z]+")
_SPACES = re.compile(r"\s+")
MAX_TERM_CHARS = 64


def normalize(text: str) -> str:
    """NFKC, casefolded, runs of whitespace made one space: the form everything compares in."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def is_chinese(text: str) -> bool:
    """Whether to answer in Chinese: at least as many Han characters as Latin words.

    "帮我debug这个function" (4 characters, 2 words) is Chinese; "what does 你好 mean"
    (2 characters, 3 words) is English.
    """
    han = len(_HAN.findall(text))
    return han > 0 and han >= len(_LATIN_WORD.findall(text))


def _fold_accents(word: str) -> str:
    if word.isascii():
        return word
    decomposed = unicodedata.normalize("NFD", word)
    return unicodedata.normalize("NFC", "".join(ch for ch in decomposed if not unicodedata.combining(ch)))


def _word_term(word: str) -> tuple[str, bool]:
    if word in ENGLISH:
        return word, True
    word = _fold_accents(word)[:MAX_TERM_CHARS]
    return (stem(word) if _ASCII_WORD.fullmatch(word) else word), False


def _cjk_terms(run: str) -> Iterator[tuple[str, bool]]:
    for i, ch in enumerate(run):
        yield ch, ch in CHINESE_CHARS
        if i + 1 < len(run):
            pair = run[i : i + 2]
            stop = (
                pair in CHINESE_WORDS
                or (ch in CHINESE_CHARS and run[i + 1] in CHINESE_CHARS)
                or not CHINESE_PARTICLES.isdisjoint(pair)
            )
            yield pair, stop


def _all_terms(normalized: str) -> Iterator[tuple[str, bool]]:
    for match in _SEGMENTS.finditer(normalized):
        cjk, word = match.groups()
        if cjk:
            yield from _cjk_terms(cjk)
        else:
            yield _word_term(word)


def terms(text: str, *, keep_stopwords_if_nothing_else: bool = True) -> list[str]:
    """The content terms of `text`, in order, repeats kept (for term frequencies).

    A text made only of stopwords ("what is this", "你好吗") keeps them all instead, so
    it can still be compared and found (unless told not to); a text with no words at
    all (emoji, punctuation) has no terms.
    """
    every = list(_all_terms(normalize(text)))
    content = [term for term, stop in every if not stop]
    if content or not keep_stopwords_if_nothing_else:
        return content
    return [term for term, _ in every]
