"""Installing: the README's install commands in a fresh venv (run by bash against a stand-in
pip that models one, and a real venv for the model's premises), and .ci/run on a fresh machine
(with a stand-in python3 that records what it is asked to do)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from packaging.version import Version

FAKE_PIP = REPO / "tests" / "helpers" / "fresh_venv_pip.py"


def run_with_fresh_venv_pip(
    script: str, tmp_path: Path
) -> tuple[subprocess.CompletedProcess, dict]:
    """Runs ``script`` with bash -e in a copy of the repository's ``pyproject.toml`` (a broken
    command may write files: an unquoted ``>=`` is a redirection), ``pip`` being the stand-in
    (tests/helpers/fresh_venv_pip.py) for a fresh venv's pip; returns the venv's end state."""
    checkout = tmp_path / "checkout"
    checkout.mkdir(exist_ok=True)
    shutil.copy(REPO / "pyproject.toml", checkout / "pyproject.toml")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "pip").write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_PIP}" "$@"\n')
    (bin_dir / "pip").chmod(0o755)
    state = tmp_path / "venv_state.json"
    state.unlink(missing_ok=True)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_PIP_STATE": str(state),
    }
    proc = subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc, json.loads(state.read_text()) if state.exists() else {}


def readme_install_block() -> str:
    text = (REPO / "README.md").read_text()
    return text.split("## Install", 1)[1].split("```bash", 1)[1].split("```", 1)[0]


def readme_quickstart_installs() -> str:
    """The quick start's first command, up to the pretraining run."""
    quickstart = (REPO / "README.md").read_text().split("```bash", 1)[1].split("```", 1)[0]
    (line,) = [x for x in quickstart.splitlines() if x.startswith("pip install")]
    return line.split(" && python ", 1)[0]


def assert_installed(proc: subprocess.CompletedProcess, state: dict) -> None:
    assert proc.returncode == 0, proc.stderr
    assert state["installed"]["solo-learn"].startswith("git+https://github.com/vturrisi/")
    assert state["installed"]["effssl-plugin"] == ["solo"]


def test_readme_install_commands_work_in_a_fresh_venv(tmp_path):
    """The README's install block and the quick start's install commands, run by bash as
    written, against a stand-in pip that models a fresh venv (setuptools 65 on Python 3.11,
    no ``wheel``) and fails where the real install fails (see the helper's docstring)."""
    for script in (readme_install_block(), readme_quickstart_installs()):
        proc, state = run_with_fresh_venv_pip(script, tmp_path)
        assert_installed(proc, state)


@pytest.mark.parametrize(
    "change, error",
    [
        (('"setuptools>=70.1,<81"', '"setuptools<81"'), "invalid command 'bdist_wheel'"),
        (('"setuptools>=70.1,<81"', '"setuptools>=70.1"'), "No module named 'pkg_resources'"),
        (('"setuptools>=70.1,<81"', "setuptools>=70.1,<81"), "No such file"),  # unquoted
        (("--no-build-isolation --no-deps", "--no-deps"), "No module named 'pkg_resources'"),
        (("--no-build-isolation --no-deps", "--no-build-isolation"), "solo-learn's pins"),
        ((".[solo]", ".[sol]"), "does not provide the extra"),
        ("solo-learn last", "No module named 'pkg_resources'"),
    ],
)
def test_the_fresh_venv_stand_in_fails_a_broken_install_block(tmp_path, change, error):
    """The stand-in can fail: each of these README edits breaks a real install."""
    block = readme_install_block()
    if change == "solo-learn last":
        lines = [line for line in block.splitlines() if line.strip()]
        block = "\n".join([lines[0], lines[2], lines[1]])
    else:
        assert change[0] in block
        block = block.replace(change[0], change[1])
    proc, _ = run_with_fresh_venv_pip(block, tmp_path)
    assert proc.returncode != 0
    assert error in proc.stderr


@pytest.mark.slow  # creates a venv and runs pip in it (offline: --no-index)
def test_a_fresh_venv_is_what_the_stand_in_pip_models(tmp_path):
    """A real ``python3 -m venv`` (no system site-packages): the setuptools that the stand-in
    starts from, no ``wheel``, ``pkg_resources`` present; and the build the README's first
    command exists for really fails there: a setup.py project that imports pkg_resources, as
    solo-learn's does, built by pip without build isolation stops at ``bdist_wheel``."""
    sys.path.insert(0, str(FAKE_PIP.parent))
    try:
        from fresh_venv_pip import fresh_venv_state
    finally:
        sys.path.remove(str(FAKE_PIP.parent))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()
    python = str(venv / "bin" / "python")
    probe = (
        "import importlib.util as u, json\n"
        "st = u.find_spec('setuptools')\n"
        "v = __import__('setuptools').__version__ if st else None\n"
        "print(json.dumps([v, bool(u.find_spec('wheel')), bool(u.find_spec('pkg_resources'))]))"
    )
    out = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True)
    setuptools, has_wheel, has_pkg_resources = json.loads(out.stdout)
    assert setuptools == fresh_venv_state()["setuptools"]
    assert not has_wheel
    assert has_pkg_resources == (setuptools is not None)

    project = tmp_path / "solo_like"
    project.mkdir()
    (project / "setup.py").write_text(
        "import pkg_resources\nfrom setuptools import setup\nsetup(name='solo-like', version='1')\n"
    )
    build = subprocess.run(
        [
            python,
            "-m",
            "pip",
            "install",
            "--no-index",
            "--no-build-isolation",
            "--no-deps",
            "--disable-pip-version-check",
            str(project),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode != 0
    if setuptools is not None and Version(setuptools) < Version("70.1"):
        assert "invalid command 'bdist_wheel'" in build.stdout + build.stderr

    # README: offline, solo-learn's wheel installs with --no-deps, with no setuptools pin
    wheel = REPO.parent / "shared" / "wheels" / WHEEL  # where CI finds it (.ci/run)
    if wheel.is_file():
        subprocess.run(
            [python, "-m", "pip", "install", "--no-index", "--no-deps", "-q", str(wheel)],
            check=True,
            timeout=300,
        )
        version = "import importlib.metadata as m; print(m.version('solo-learn'))"
        out = subprocess.run([python, "-c", version], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "1.0.6"


WHEEL = "solo_learn-1.0.6-py3-none-any.whl"

# answers `-c 'import torch, torchvision'` and `-c 'import solo'` from $HAS_TORCH / $HAS_SOLO,
# CI's pytest run (`.ci/pytest_no_skips.py`) with $PYTEST_STATUS, anything else with 0; logs
# every call
FAKE_PYTHON = """#!/usr/bin/env bash
echo "$*" >> "$CALLS"
case "$*" in
  *"import torch, torchvision"*) exit "$HAS_TORCH" ;;
  "-c import solo") exit "$HAS_SOLO" ;;
  ".ci/pytest_no_skips.py"*) exit "$PYTEST_STATUS" ;;
esac
exit 0
"""


def run_ci(tmp_path: Path, has_torch: bool, has_solo: bool, pytest_status: int, wheel=True):
    clone = tmp_path / "clone"
    (clone / ".ci").mkdir(parents=True)
    shutil.copy(REPO / ".ci" / "run", clone / ".ci" / "run")
    subprocess.run(["git", "init", "-q", str(clone)], check=True)
    if wheel:
        (tmp_path / "shared" / "wheels").mkdir(parents=True)
        (tmp_path / "shared" / "wheels" / WHEEL).write_bytes(b"")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(FAKE_PYTHON)
    (bin_dir / "python3").chmod(0o755)
    calls = tmp_path / "calls.txt"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "CALLS": str(calls),
        "HAS_TORCH": "0" if has_torch else "1",
        "HAS_SOLO": "0" if has_solo else "1",
        "PYTEST_STATUS": str(pytest_status),
    }
    proc = subprocess.run(
        ["bash", str(clone / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=60
    )
    return proc, calls.read_text().splitlines() if calls.exists() else []


def installs(calls: list[str]) -> list[str]:
    return [c for c in calls if c.startswith("-m pip install")]


def test_fresh_machine_gets_torch_then_the_solo_wheel_then_the_project(tmp_path):
    proc, calls = run_ci(tmp_path, has_torch=False, has_solo=False, pytest_status=0)
    assert proc.returncode == 0, proc.stderr
    wheel = (tmp_path / "clone" / ".." / "shared" / "wheels" / WHEEL).as_posix()
    assert installs(calls) == [
        "-m pip install torch==2.14.1 torchvision==0.29.1",
        f"-m pip install --no-deps {wheel}",
        "-m pip install -e .[test] --config-settings editable_mode=strict",
    ]
    assert calls[-1] == ".ci/pytest_no_skips.py -q"


def test_installed_torch_and_solo_are_kept(tmp_path):
    proc, calls = run_ci(tmp_path, has_torch=True, has_solo=True, pytest_status=0)
    assert proc.returncode == 0, proc.stderr
    assert installs(calls) == ["-m pip install -e .[test] --config-settings editable_mode=strict"]


@pytest.mark.parametrize("status", [1, 2, 5])
def test_failing_or_empty_pytest_run_fails_ci(tmp_path, status):
    proc, calls = run_ci(tmp_path, has_torch=True, has_solo=True, pytest_status=status)
    assert calls[-1] == ".ci/pytest_no_skips.py -q"
    assert proc.returncode != 0  # the "no tests" and skip checks: tests/test_ci_skips.py


def test_missing_wheel_is_named(tmp_path):
    proc, calls = run_ci(tmp_path, has_torch=True, has_solo=False, pytest_status=0, wheel=False)
    assert proc.returncode != 0
    assert WHEEL in proc.stderr
    assert not any("pytest" in c for c in calls)
