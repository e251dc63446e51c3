"""The config file as a document to edit, for `mbe-gateway init`: every comment, key and order
the user wrote survives an edit.

tomllib only reads; a writer of our own would have to re-emit the user's comments, spacing,
inline tables and quoting styles exactly, for a schema that grows. tomlkit (pure Python, no
dependencies, the parser under Poetry) parses into a document that keeps all of that, and a
change touches only the key it sets. A new file starts from `config.default_config_text()`,
the one template, so a fresh `init` writes exactly that text plus the answers given.

Every edit is checked by `config.load_config` before the file is replaced (atomically, the
old one kept as `.bak`): a wrong answer leaves the file as it was.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.container import Container
from tomlkit.items import AoT, InlineTable, Table

from mbe_gateway.config import Config, default_config_text, load_config
from mbe_gateway.errors import ConfigError

Document = tomlkit.TOMLDocument


def open_document(path: Path, *, fresh: bool = False) -> Document:
    """The file at `path` as an editable document; the commented default when there is none
    (or when `fresh`: start over)."""
    text = default_config_text()
    if not fresh:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            pass
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: cannot be read ({e})") from None
    try:
        return tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as e:
        raise ConfigError(f"{path}: {e} (not valid TOML)") from None


def table(document: Document, *names: str) -> Table | InlineTable | Container:
    """The table at `names` (e.g. "channels", "telegram"), created (empty) when missing; one the
    user wrote inline (`telegram = { enabled = true }`) is edited inline."""
    here: Table | InlineTable | Container = document
    for name in names:
        found = here.get(name)
        if not isinstance(found, Table | InlineTable):
            found = tomlkit.table(is_super_table=name != names[-1])
            here[name] = found
        here = found
    return here


def set_key(document: Document, names: Sequence[str], key: str, value: Any) -> None:
    """Set one key; the table's other keys and comments stay where they are."""
    table(document, *names)[key] = value


def set_providers(document: Document, blocks: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
    """Make [[llm.providers]] the given kinds, in order, each with the given keys set.

    The first existing block of a kind is edited in place (its other keys, say a timeout,
    stay), and further blocks of that kind follow it unchanged; blocks of kinds not listed
    go. A value of None removes that key.
    """
    llm = document.get("llm")
    existing = [_as_table(block) for block in llm.get("providers", [])] if isinstance(llm, Table) else []
    chosen: list[Table] = []
    for kind, values in blocks:
        same_kind = [block for block in existing if block.get("kind") == kind]
        block = same_kind[0] if same_kind else tomlkit.table()
        if not same_kind:
            block["kind"] = kind
        for key, value in values.items():
            if value is None:
                block.pop(key, None)
            elif block.get(key) != value:
                block[key] = value
        chosen += [block, *same_kind[1:]]
    if [id(b) for b in chosen] == [id(b) for b in existing]:
        return  # same blocks, same order: the values were set in place
    if isinstance(llm, Table):
        llm.pop("providers", None)
    if not chosen:
        if isinstance(llm, Table) and not llm:
            document.pop("llm")
        return
    providers = AoT([])
    for block in chosen:
        providers.append(block)
    if not isinstance(llm, Table):  # [llm] holds only the array: no header of its own
        llm = tomlkit.table(is_super_table=True)
        document["llm"] = llm
    llm["providers"] = providers


def _as_table(block: Any) -> Table:
    """A provider block as a [[table]]; `providers = [{ kind = "local" }]` written inline becomes one."""
    if isinstance(block, Table):
        return block
    converted = tomlkit.table()
    for key, value in block.items():
        converted[key] = value
    return converted


def save(document: Document, path: Path) -> tuple[Config, Path | None] | None:
    """Check the document as a config, then replace the file with it.

    Returns the new config and the backup of the old file (None when there was none), or
    None when the file already says exactly this. ConfigError, naming `path`, when the
    document is not a valid config: then nothing was written.
    """
    text = tomlkit.dumps(document)
    try:
        if path.read_text(encoding="utf-8") == text:
            return None
        existed = True
    except FileNotFoundError:
        existed = False
    except (OSError, UnicodeDecodeError):
        existed = True
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot be written ({e.strerror})") from None
    try:
        load_config(tmp)
    except ConfigError as e:
        tmp.unlink(missing_ok=True)
        raise ConfigError(str(e).replace(str(tmp), str(path))) from None
    backup = path.with_name(path.name + ".bak") if existed else None
    try:
        if backup is not None:
            shutil.copy2(path, backup)
        os.replace(tmp, path)  # atomic: a reader sees the old file or the new one, never neither
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"{path}: cannot be written ({e.strerror})") from None
    return load_config(path), backup
