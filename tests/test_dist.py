"""`make dist`'s artifacts: the sdist and the wheel build, pass `twine check`, hold only the package, and the
wheel installs into a fresh venv whose `basetts` runs (no network: the build uses this venv's setuptools)."""
from __future__ import annotations

import os
import site
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import basetts

ROOT = Path(__file__).resolve().parent.parent


def run(*command: object, **options: object) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=300, **options)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_the_sdist_and_wheel_pass_twine_and_the_wheel_runs_from_a_fresh_venv(tmp_path: Path) -> None:
    out = tmp_path / "dist"
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT)
    wheels, sdists = list(out.glob("*.whl")), list(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1
    run(sys.executable, "-m", "twine", "check", "--strict", *wheels, *sdists)
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert "basetts/py.typed" in names and "basetts/testing/server.py" in names and "basetts/playback/ring.py" in names
    assert not [n for n in names if n.startswith(("tests/", "bench/", "examples/", "docs/"))], names
    with tarfile.open(sdists[0]) as sdist:
        members = {Path(*Path(m).parts[1:]).as_posix() for m in sdist.getnames()}
    assert {"README.md", "setup.cfg", "setup.py", "basetts/__init__.py"} <= members

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)  # pip is this venv's (--python): 5 s less
    python = venv / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-index", "--no-deps", wheels[0])
    # The dependencies come from this venv's site-packages (no network); basetts must come from the wheel.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(site.getsitepackages())}
    shown = run(python, "-c", "import basetts, basetts.testing; print(basetts.__version__, basetts.__file__)",
                cwd=tmp_path, env=env).stdout.split()
    assert shown[0] == basetts.__version__ and shown[1].startswith(str(venv))
    assert run(venv / "bin" / "basetts", "--version", cwd=tmp_path, env=env).stdout.strip() == \
        f"basetts {basetts.__version__}"
