"""Editing the config file keeps everything the user wrote that the edit does not touch."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomlkit

from mbe_gateway import config_document
from mbe_gateway.config import default_config_text, load_config
from mbe_gateway.errors import ConfigError

HANDWRITTEN = """\
# Pi in the hallway
[gateway]
language = "en"   # the family speaks English
log_level = "debug"

[[llm.providers]]
kind = "openai"         # ollama on the NAS
name = "nas"
base_url = "http://nas.local:11434/v1"
model = "qwen2.5:7b"
timeout = 120.0

[[llm.providers]]
kind = "openai"
name = "deepseek"
base_url = "https://api.deepseek.com/v1"
model = "deepseek-chat"
api_key = "secret:deepseek_key"
"""


def test_a_new_file_is_the_commented_default_plus_the_edits(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    document = config_document.open_document(path)
    assert tomlkit.dumps(document) == default_config_text()
    config_document.set_key(document, ("channels", "telegram"), "enabled", True)
    config_document.set_key(document, ("channels", "telegram"), "token", "secret:telegram_token")
    saved = config_document.save(document, path)
    assert saved is not None and saved[1] is None  # no backup: there was no file
    text = path.read_text()
    assert text.startswith(default_config_text().split("[channels.telegram]")[0])
    assert saved[0].channels.telegram.enabled


def test_comments_order_and_other_blocks_survive_a_provider_edit(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(HANDWRITTEN)
    document = config_document.open_document(path)
    config_document.set_key(document, ("gateway",), "language", "zh")
    config_document.set_providers(document, [("openai", {"model": "llama3.2"}), ("local", {})])
    saved = config_document.save(document, path)
    assert saved is not None and saved[1] == tmp_path / "config.toml.bak"
    text = path.read_text()
    assert '# Pi in the hallway\n[gateway]\nlanguage = "zh"   # the family speaks English\n' in text
    assert 'kind = "openai"         # ollama on the NAS' in text
    config = saved[0]
    assert [(p.name, p.model, p.timeout) for p in config.llm.providers] == [
        ("nas", "llama3.2", 120.0),
        ("deepseek", "deepseek-chat", 60.0),  # the second block of a kind stays, after the first
        ("local:bundled", "", 60.0),
    ]
    assert (tmp_path / "config.toml.bak").read_text() == HANDWRITTEN


def test_an_edit_that_would_not_load_is_refused_and_the_file_is_untouched(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(HANDWRITTEN)
    document = config_document.open_document(path)
    config_document.set_key(document, ("gateway",), "language", "fr")
    with pytest.raises(ConfigError, match=rf"{path}: \[gateway\] language: expected \"en\" \| \"zh\""):
        config_document.save(document, path)
    assert path.read_text() == HANDWRITTEN
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["config.toml"]  # no .bak, no temp
    assert load_config(path).gateway.language == "en"


def test_saving_what_the_file_already_says_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(HANDWRITTEN)
    document = config_document.open_document(path)
    config_document.set_providers(
        document, [("openai", {"model": "qwen2.5:7b", "base_url": "http://nas.local:11434/v1"})]
    )
    assert config_document.save(document, path) is None
    assert not (tmp_path / "config.toml.bak").exists()
