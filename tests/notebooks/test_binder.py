"""Binder's files build a working environment: a fresh virtual environment made from
binder/requirements.txt and binder/postBuild, as repo2docker makes one (without Docker), in a
clean copy of the repository (what git tracks: no built bundle, no node_modules, as Binder
clones it), runs notebooks/01-quickstart.ipynb."""

from __future__ import annotations

import os
import shutil
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
    assert "node build.mjs" in post_build.read_text(), "postBuild builds the dashboard bundle"
    assert (BINDER / "runtime.txt").read_text().strip().startswith("python-3.")
    readme = (ROOT / "README.md").read_text()
    assert "mybinder.org/badge_logo.svg" in readme and "labpath=notebooks" in readme


def clean_copy(dest: Path) -> Path:
    """The files git tracks (and new ones it does not ignore), copied to ``dest``."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_fresh_environment_from_binder_files_runs_the_quickstart(tmp_path: Path) -> None:
    repo = clean_copy(tmp_path / "repo")
    assert not (repo / "memlab/jupyter/dashboard/static").exists()
    venv = tmp_path / "binder-env"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    # repo2docker's order: requirements.txt, then postBuild from the repository's root.
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "-r", str(repo / "binder/requirements.txt")],
        check=True,
        cwd=repo,
        env=env,
    )
    subprocess.run([str(repo / "binder/postBuild")], check=True, cwd=repo, env=env)
    assert (repo / "memlab/jupyter/dashboard/static/dashboard.js").is_file()
    where = subprocess.run(
        [str(python), "-c", "import memlab, jupyterlab, ipykernel; print(memlab.__file__)"],
        check=True,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert where == str(repo / "memlab" / "__init__.py"), "the env runs the copy's memlab"

    run = execute(repo / "notebooks" / "01-quickstart.ipynb", python=str(python))
    assert run.session_pids
    print(f"01-quickstart in the Binder environment: {run.seconds:.1f} s")
