"""The assistant says the same things in English and Chinese."""

from __future__ import annotations

import string

from mbe_gateway.texts import TEXTS


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_both_languages_have_every_sentence_with_the_same_placeholders() -> None:
    assert TEXTS["en"].keys() == TEXTS["zh"].keys()
    for key, english in TEXTS["en"].items():
        assert placeholders(english) == placeholders(TEXTS["zh"][key]), key
