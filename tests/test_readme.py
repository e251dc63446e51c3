"""The README's two opening commands are the project's promise; CI must run the second one."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```sh\n(.+?)\n```", text, flags=re.S)


def test_readme_opens_with_an_install_command_and_a_test_command() -> None:
    install, tests = readme_commands()[:2]
    assert "pip install" in install and "mbe-gateway" in install
    assert "pytest" in tests


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    tests = readme_commands()[1]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert tests in ci.splitlines()
