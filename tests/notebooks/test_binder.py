"""Binder's files build a working environment: a fresh virtual environment made from
binder/requirements.txt and binder/postBuild, as repo2docker makes one (without Docker), runs
notebooks/01-quickstart.ipynb."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.notebooks.runner import NOTEBOOKS, execute

ROOT = NOTEBOOKS.parent
BINDER = ROOT / "binder"


def test_binder_files_are_what_repo2docker_reads() -> None:
    assert (BINDER / "requirements.txt").is_file()
    post_build = BINDER / "postBuild"
    assert os.access(post_build, os.X_OK), "repo2docker runs postBuild only if it is executable"
    assert 'pip install --no-cache-dir -e ".[lab]"' in post_build.read_text()
    assert (BINDER / "runtime.txt").read_text().strip().startswith("python-3.")
    readme = (ROOT / "README.md").read_text()
    assert "mybinder.org/badge_logo.svg" in readme and "labpath=notebooks" in readme


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_fresh_environment_from_binder_files_runs_the_quickstart(tmp_path: Path) -> None:
    venv = tmp_path / "binder-env"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    # repo2docker's order: requirements.txt, then postBuild from the repository's root.
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-r",
                    str(BINDER / "requirements.txt")], check=True, cwd=ROOT, env=env)
    subprocess.run([str(BINDER / "postBuild")], check=True, cwd=ROOT, env=env)
    where = subprocess.run([str(python), "-c", "import memlab, jupyterlab, ipykernel; "
                            "print(memlab.__file__)"], check=True, cwd=tmp_path, env=env,
                           capture_output=True, text=True).stdout.strip()
    assert where == str(ROOT / "memlab" / "__init__.py"), "the env runs this repository's memlab"

    run = execute(NOTEBOOKS / "01-quickstart.ipynb", python=str(python))
    assert run.session_pids
    print(f"01-quickstart in the Binder environment: {run.seconds:.1f} s")
