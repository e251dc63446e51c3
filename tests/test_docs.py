"""The configuration guide covers every key the program accepts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mbe_gateway.config import default_config_text

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_every_config_key_in_the_default_file_is_documented() -> None:
    guide = (DOCS / "configuration.md").read_text(encoding="utf-8")
    keys = set(re.findall(r"(?m)^#\s+([a-z_]+) = ", default_config_text()))
    keys |= set(re.findall(r"(?m)^\[([a-z_.]+)\]$", default_config_text()))
    assert keys, "the default config file lists no keys?"
    missing = sorted(k for k in keys if f"`{k}`" not in guide and f"`[{k}]`" not in guide)
    assert missing == [], f"docs/configuration.md does not mention: {missing}"


# --- every command and config block a user might copy from the docs -----------------------

ROOT = DOCS.parent
_OPERATORS = {"&&", "||", "|", ";", ">", ">>", "<", "2>&1", "&"}


def _documents() -> list[Path]:
    return [
        ROOT / "README.md",
        *sorted(DOCS.rglob("*.md")),
        *sorted((ROOT / "examples").glob("*")),
        *sorted((ROOT / "src" / "mbe_gateway").rglob("*.py")),  # hints in messages name commands too
    ]


def _code_lines(path: Path) -> list[str]:
    """Inline code spans and lines of fenced blocks; in an example config, its comment lines."""
    text = path.read_text(encoding="utf-8")
    lines = re.findall(r"`([^`\n]+)`", text)
    for block in re.findall(r"(?ms)^\s*```[a-z]*\n(.*?)^\s*```", text):
        lines += block.splitlines()
    if path.suffix == ".toml":
        lines += re.findall(r"(?m)^\s*#\s+(mbe-gateway .*)$", text)
    return lines


def documented_commands() -> list[tuple[str, list[str]]]:
    """(file, words) for each `mbe-gateway ...` invocation found in code in the docs."""
    import shlex

    found: list[tuple[str, list[str]]] = []
    for path in _documents():
        for line in _code_lines(path):
            if "mbe-gateway " not in line:
                continue
            try:
                words = shlex.split(line.replace("…", ""), comments=True)
            except ValueError:
                continue
            command: list[str] = []
            for word in [*words, ";"]:
                if word in _OPERATORS:
                    if command and Path(command[0]).name == "mbe-gateway" and len(command) > 1:
                        found.append((str(path.relative_to(ROOT)), command))
                    command = []
                else:
                    command.append(word)
    return found


def _unknown(words: list[str]) -> str | None:
    """What in `mbe-gateway ...` the real CLI does not know, or None when it all resolves."""
    import typer

    from mbe_gateway.cli import app

    root: Any = typer.main.get_command(app)
    command, positional = root, 0
    rest = iter(words[1:])
    for word in rest:
        if word.startswith("-"):
            name = word.split("=", 1)[0]
            option = next((p for p in command.params if name in (*p.opts, *p.secondary_opts)), None)
            if option is None:
                return f"option {name} of `{command.name}`"
            if not (option.is_flag or option.count or "=" in word):
                next(rest, None)  # its value
        elif hasattr(command, "commands"):
            if word not in command.commands:
                return f"command {word!r} under `{command.name}`"
            command, positional = command.commands[word], 0
        else:
            positional += 1
    if hasattr(command, "commands"):
        return None  # a group named alone (`mbe-gateway pairing`) shows its help
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    required = sum(p.required for p in arguments)
    if any(p.nargs == -1 for p in arguments):  # TEXT...: any number of words
        return None
    if positional > len(arguments) or positional not in (0, required, len(arguments)):
        return f"{positional} argument(s) to `{command.name}`, which takes {[a.name for a in arguments]}"
    return None


def test_every_mbe_gateway_command_in_the_docs_exists() -> None:
    commands = documented_commands()
    assert len(commands) > 20, "the extraction found almost nothing: is it broken?"
    wrong = [
        f"{where}: {' '.join(words)}: {problem}" for where, words in commands if (problem := _unknown(words))
    ]
    assert wrong == []


def test_a_mistyped_command_in_the_docs_would_be_caught() -> None:
    assert _unknown(["mbe-gateway", "pairing", "approve", "CODE"]) is None
    assert _unknown(["mbe-gateway", "--config", "x.toml", "config", "check"]) is None
    assert _unknown(["mbe-gateway", "pairing", "accept", "CODE"]) is not None
    assert _unknown(["mbe-gateway", "doctor", "--fix"]) is not None
    assert _unknown(["mbe-gateway", "pairing", "revoke", "CODE"]) is not None  # wants CHANNEL SENDER_ID


def documented_toml() -> list[tuple[str, str]]:
    """Every ```toml block in the docs, dedented (some sit inside list items)."""
    import textwrap

    blocks: list[tuple[str, str]] = []
    for path in sorted(DOCS.rglob("*.md")):
        text = path.read_text(encoding="utf-8")
        for body in re.findall(r"(?ms)^ *```toml\n(.*?)^ *```", text):
            blocks.append((str(path.relative_to(ROOT)), textwrap.dedent(body)))
    return blocks


def test_every_toml_block_in_the_docs_is_a_valid_config(tmp_path: Path) -> None:
    from mbe_gateway.config import load_config
    from mbe_gateway.errors import ConfigError

    blocks = documented_toml()
    assert len(blocks) >= 5
    wrong = []
    for number, (where, body) in enumerate(blocks):
        path = tmp_path / f"block{number}.toml"
        path.write_text(body, encoding="utf-8")
        try:
            load_config(path)
        except ConfigError as e:
            wrong.append(f"{where}: {e}")
    assert wrong == []


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    anchors = set()
    for heading in re.findall(r"(?m)^#{1,6} (.+)$", page.read_text(encoding="utf-8")):
        anchors.add(re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-"))
    return anchors


def test_every_link_between_the_docs_leads_somewhere() -> None:
    pages = [ROOT / "README.md", ROOT / "examples" / "README.md", *sorted(DOCS.rglob("*.md"))]
    broken = []
    for page in pages:
        text = re.sub(r"(?s)```.*?```", "", page.read_text(encoding="utf-8"))
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert broken == []


def _known_settings() -> dict[str, set[str]]:
    """Section → keys, read from the commented default config (which lists every key)."""
    known: dict[str, set[str]] = {}
    section = ""
    for line in default_config_text().splitlines():
        if header := re.fullmatch(r"#?\s*\[\[?([a-z_.]+)\]\]?", line.strip()):
            section = header[1]
        elif key := re.match(r"#?\s*([a-z_]+) = ", line):
            known.setdefault(section, set()).add(key[1])
    return known


def test_every_setting_named_in_the_prose_exists() -> None:
    """`log_level = "debug"` or `[secrets] backend = "file"` in a sentence must be a real key
    (the mbe contract's `x = y` spans are formulas, not settings)."""
    known = _known_settings()
    every_key = set().union(*known.values())
    pages = [ROOT / "README.md", ROOT / "examples" / "README.md", *sorted(DOCS.rglob("*.md"))]
    wrong = []
    for page in [p for p in pages if p.name != "mbe-contract.md"]:
        text = page.read_text(encoding="utf-8")
        for section, key in re.findall(r"`(?:\[([a-z_.]+)\] )?([a-z_]+) = [^`]+`", text):
            if (section and key not in known.get(section, ())) or key not in every_key:
                wrong.append(f"{page.relative_to(ROOT)}: {f'[{section}] ' if section else ''}{key}")
    assert len(known) >= 8 and "dm_policy" in every_key
    assert wrong == []


def test_troubleshooting_explains_every_check_doctor_can_print() -> None:
    source = (ROOT / "src" / "mbe_gateway" / "doctor.py").read_text(encoding="utf-8")
    names = {name.strip() for name in re.findall(r'Check\(\s*f?"([^"{]+)', source)}
    assert {"config", "database", "secret", "channel"} <= names
    guide = (DOCS / "troubleshooting.md").read_text(encoding="utf-8")
    missing = sorted(n for n in names if not re.search(rf"`[-✓✗! ]*{re.escape(n)}[ `]", guide))
    assert missing == [], f"docs/troubleshooting.md does not explain doctor's {missing}"


def test_every_log_line_troubleshooting_quotes_is_one_the_code_writes() -> None:
    """A quoted log message (`"restarting MBE"`) is what people grep for: it must exist."""
    guide = (DOCS / "troubleshooting.md").read_text(encoding="utf-8")
    quoted = {" ".join(q.split()) for q in re.findall(r'`"([^"`]+ [^"`]+)"`', guide)}
    quoted = {q for q in quoted if not q.startswith("secret:")}
    assert len(quoted) >= 10
    source = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "src" / "mbe_gateway").rglob("*.py"))
    missing = sorted(q for q in quoted if f'"{q}"' not in source)
    assert missing == [], f"docs/troubleshooting.md quotes log lines the code never writes: {missing}"
