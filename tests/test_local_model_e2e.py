"""The whole way with the real local model: `mbe-gateway chat --message` on a machine with no
provider configured answers with the bundled SmolLM2 through llama.cpp, the real engine
child, and the store on disk. Skipped only where llama-cpp-python is not installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed: pip install 'mbe-gateway[local]'")

SCRIPT = str(Path(sys.executable).with_name("mbe-gateway"))


def test_with_no_provider_configured_the_bundled_local_model_answers(home: Path) -> None:
    assert not Path(os.environ["MBE_GATEWAY_CONFIG"]).exists()  # nothing configured at all
    done = subprocess.run(
        [SCRIPT, "chat", "--plain", "--message", "In one short sentence: what colour is the sky?"],
        capture_output=True,
        text=True,
        timeout=110,
        env={**os.environ, "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    answer = done.stdout.strip()
    assert answer, "the model printed nothing"
    assert (home / "gateway.sqlite3").exists()
