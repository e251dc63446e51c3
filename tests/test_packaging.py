"""The wheel `pipx install` gets carries everything the program reads at run time, and runs.

Building is hatchling's own build (`pip wheel --no-build-isolation`, no network); the slow test
installs that wheel into a brand-new venv and runs the console script from there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "mbe_gateway"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("mbe_gateway-*.whl")
    return built


def package_files() -> set[str]:
    """Every file of the package in the source tree, as wheel paths (caches aside)."""
    return {
        "mbe_gateway/" + path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_the_wheel_carries_every_package_file_including_data(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    carried = {name for name in names if name.startswith("mbe_gateway/")}
    assert carried == package_files()
    for data in (
        "mbe_gateway/engine/experts.json",  # the engine's expert catalog
        "mbe_gateway/services/templates/mbe-gateway.service",
        "mbe_gateway/services/templates/org.mbe-gateway.plist",
        "mbe_gateway/control/page/index.html",  # the control plane's web page
        "mbe_gateway/py.typed",
    ):
        assert data in names
    entry_points = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    )
    assert b"mbe-gateway = mbe_gateway.cli:main" in entry_points


def test_the_repos_service_files_are_the_packaged_templates() -> None:
    for top, name in (("systemd", "mbe-gateway.service"), ("launchd", "org.mbe-gateway.plist")):
        shown = ROOT / top / name
        assert shown.resolve() == (PACKAGE / "services" / "templates" / name).resolve(), shown
        assert "{exec_start}" in shown.read_text() or "{program_arguments}" in shown.read_text()


@pytest.mark.slow
def test_the_wheel_installed_in_a_fresh_venv_runs_from_there(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "pipx-like-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    # The dependencies come from this test run's environment (no network here), appended AFTER
    # the new venv's own site-packages by a .pth line: our package itself can only be the
    # wheel's copy (a .pth line does not run the editable install's own .pth hook).
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site / "deps-from-test-env.pth").write_text(sysconfig.get_path("purelib") + "\n")
    env = {**os.environ, "HOME": str(tmp_path), "COLUMNS": "200"}
    script = venv / "bin" / "mbe-gateway"

    where = subprocess.run(
        [str(python), "-c", "import mbe_gateway; print(mbe_gateway.__file__)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(venv)), where.stdout

    for args in (["--help"], ["engine", "--help"]):
        done = subprocess.run([str(script), *args], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "Usage: mbe-gateway" in done.stdout

    dry = subprocess.run(
        [str(script), "service", "install", "--dry-run", "--platform", "linux"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dry.returncode == 0, dry.stderr
    assert f"ExecStart={script} run" in dry.stdout.splitlines()  # the venv's own script
