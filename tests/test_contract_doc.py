"""docs/mbe-contract.md shows people exactly the schemas contract.py holds the code to.

Every tool's "### <tool> — arguments" and "### <tool> — result" sections carry one ```json
block; each must equal the schema in contract.py, and every tool of the contract must be
documented (and nothing else).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from mbe_gateway import contract

DOC = Path(__file__).resolve().parents[1] / "docs" / "mbe-contract.md"
TOOLS = (*contract.REQUIRED_TOOLS, *contract.OPTIONAL_TOOLS)
_SECTION = re.compile(r"^### (\w+) — (arguments|result)\s*$\n+```json\n(.*?)\n```", re.MULTILINE | re.DOTALL)


def documented() -> dict[tuple[str, str], Any]:
    blocks: dict[tuple[str, str], Any] = {}
    for tool, kind, body in _SECTION.findall(DOC.read_text(encoding="utf-8")):
        assert (tool, kind) not in blocks, f"{tool} — {kind} is documented twice"
        blocks[(tool, kind)] = json.loads(body)
    return blocks


def test_every_documented_schema_belongs_to_a_contract_tool() -> None:
    assert {tool for tool, _ in documented()} <= set(TOOLS)


@pytest.mark.parametrize("tool", TOOLS)
def test_each_tools_documented_arguments_and_result_are_the_contracts_schemas(tool: str) -> None:
    blocks = documented()
    assert blocks.get((tool, "arguments")) == contract.INPUT_SCHEMAS[tool]
    assert blocks.get((tool, "result")) == contract.OUTPUT_SCHEMAS[tool]


def test_every_heading_for_a_schema_is_followed_by_its_json_block() -> None:
    text = DOC.read_text(encoding="utf-8")
    headings = re.findall(r"^### (\w+) — (arguments|result)\s*$", text, re.MULTILINE)
    assert len(headings) == len(documented()) == 2 * len(TOOLS)
