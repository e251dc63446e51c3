"""The expert catalog mbe_route chooses from: loaded once at start, checked, ready to match.

The default ships beside this module (experts.json, 17 experts); a user replaces it with
`--experts PATH` or MBE_ENGINE_EXPERTS. A file that is not what it should be stops the
engine at start with a message naming the file, the expert and the field: a routing
table silently half-loaded would be worse than none.

The file is {"experts": [{"id", "name_en", "name_zh", "description", "keywords_en",
"keywords_zh"}, …]}, and one expert must have the id "general": the fallback when no
other fits. A keyword written with Chinese characters matches anywhere in the normalised
input; any other keyword matches as a run of whole words, compared after the same
stemming as everything else (so "boil" matches "boiling", "ticket" matches "tickets").
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from mbe_gateway.engine.text import is_chinese, normalize, terms
from mbe_gateway.errors import ConfigError

ENV_EXPERTS = "MBE_ENGINE_EXPERTS"
FALLBACK_ID = "general"
_ID = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_Key = tuple[bool, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class Keyword:
    text: str
    chinese: bool
    """Matched as a substring of the normalised input (`text` is normalised)."""
    terms: tuple[str, ...]
    """Otherwise matched as this run of terms (text.terms of the keyword)."""
    weight: float
    """1 / how many experts list this keyword: a word every expert claims decides nothing."""


@dataclass(frozen=True, slots=True)
class CatalogExpert:
    id: str
    name_en: str
    name_zh: str
    description: str
    keywords: tuple[Keyword, ...]

    def name(self, chinese: bool) -> str:
        return self.name_zh if chinese else self.name_en


@dataclass(frozen=True, slots=True)
class Catalog:
    experts: tuple[CatalogExpert, ...]
    source: str
    longest_keyword: int
    """The most terms in any word keyword: longer runs of a message's words match none."""

    @property
    def fallback(self) -> CatalogExpert:
        return next(e for e in self.experts if e.id == FALLBACK_ID)

    def by_id(self, expert_id: str) -> CatalogExpert | None:
        return next((e for e in self.experts if e.id == expert_id), None)


def load_catalog(path: Path | None = None) -> Catalog:
    """The catalog at `path`, else at $MBE_ENGINE_EXPERTS, else the packaged default.

    Raises ConfigError saying what is wrong and where.
    """
    chosen = path or (Path(os.environ[ENV_EXPERTS]).expanduser() if os.environ.get(ENV_EXPERTS) else None)
    if chosen is None:
        raw = resources.files(__package__).joinpath("experts.json").read_text(encoding="utf-8")
        return parse_catalog(raw, "the built-in expert catalog")
    try:
        raw = chosen.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the expert catalog {chosen}: {exc}") from exc
    return parse_catalog(raw, f"the expert catalog {chosen}")


def _strings(where: str, item: dict[str, Any], key: str, *, required: bool) -> list[str]:
    value = item.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"{where}: {key!r} should be a list of non-empty strings")
    if required and not value:
        raise ConfigError(f"{where}: {key!r} should not be empty")
    return value


def _text(where: str, item: dict[str, Any], key: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: {key!r} should be a non-empty string")
    return value.strip()


def parse_catalog(raw: str, source: str) -> Catalog:
    """Check and prepare a catalog from its JSON text; `source` names it in error messages."""
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"{source} is not valid JSON: {exc}") from exc
    items = document.get("experts") if isinstance(document, dict) else None
    if not isinstance(items, list) or not items:
        raise ConfigError(f'{source} should be an object with a non-empty "experts" list')

    specs: list[tuple[dict[str, Any], dict[_Key, str]]] = []
    for i, item in enumerate(items):
        where = f"{source}, experts[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where} should be an object")
        expert_id = item.get("id")
        if not isinstance(expert_id, str) or not _ID.match(expert_id):
            raise ConfigError(
                f"{where}: 'id' should be lowercase letters, digits, _ or - (got {expert_id!r})"
            )
        where = f"{source}, expert {expert_id!r}"
        keywords = _strings(where, item, "keywords_en", required=False)
        keywords += _strings(where, item, "keywords_zh", required=False)
        if not keywords and expert_id != FALLBACK_ID:
            raise ConfigError(f"{where} has no keywords_en or keywords_zh: nothing could route to it")
        # Keyed by what is matched, so "learn" and "learning" are one keyword, not two.
        by_key: dict[_Key, str] = {}
        for keyword in keywords:
            by_key.setdefault(_match_key(where, keyword), normalize(keyword))
        specs.append((item, by_key))

    ids = Counter(item["id"] for item, _ in specs)
    if duplicated := [i for i, n in ids.items() if n > 1]:
        raise ConfigError(f"{source}: expert id {duplicated[0]!r} is used more than once")
    if FALLBACK_ID not in ids:
        raise ConfigError(f'{source} has no expert with the id "{FALLBACK_ID}" (the fallback when none fits)')

    claims = Counter(key for _, by_key in specs for key in by_key)
    experts = []
    for item, by_key in specs:
        where = f"{source}, expert {item['id']!r}"
        experts.append(
            CatalogExpert(
                id=item["id"],
                name_en=_text(where, item, "name_en"),
                name_zh=_text(where, item, "name_zh"),
                description=_text(where, item, "description"),
                keywords=tuple(
                    Keyword(
                        text=text, chinese=key[0], terms=() if key[0] else key[1], weight=1.0 / claims[key]
                    )
                    for key, text in by_key.items()
                ),
            )
        )
    longest = max((len(k.terms) for e in experts for k in e.keywords), default=1)
    return Catalog(experts=tuple(experts), source=source, longest_keyword=longest)


def _match_key(where: str, keyword: str) -> _Key:
    """What a keyword matches: (True, (normalised text,)) as a substring, or (False, terms)."""
    if is_chinese(keyword):
        return (True, (normalize(keyword),))
    words = terms(keyword, keep_stopwords_if_nothing_else=False)
    if not words:
        raise ConfigError(f"{where}: keyword {keyword!r} is only stopwords: it would never match")
    return (False, tuple(words))
