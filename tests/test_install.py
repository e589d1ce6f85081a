"""Installing: the README's install commands, and .ci/run on a fresh machine (with a
stand-in python3 that records what it is asked to do)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO
from packaging.specifiers import SpecifierSet


def readme_install_commands() -> list[list[str]]:
    """The commands of the README's Install block, split as the shell does."""
    text = (REPO / "README.md").read_text()
    block = text.split("## Install", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]


def test_readme_install_order_and_setuptools_range_work_in_a_fresh_venv():
    """A fresh venv has setuptools 65 and no `wheel`: the first command must bring a
    setuptools that builds wheels itself (>= 70.1) and still has pkg_resources (< 81), before
    solo-learn is built without build isolation; then the project."""
    commands = readme_install_commands()
    assert [c[:2] for c in commands] == [["pip", "install"]] * 3
    (setuptools,) = [a for a in commands[0][2:] if a.startswith("setuptools")]
    spec = SpecifierSet(re.sub(r"^setuptools", "", setuptools))
    assert not spec.contains("65.5.0")  # Python 3.11's venv: no bdist_wheel without `wheel`
    assert not spec.contains("81.0.0") and not spec.contains("84.2.1")  # no pkg_resources
    assert spec.contains("80.9.0")
    solo = commands[1]
    assert "--no-build-isolation" in solo and "--no-deps" in solo
    assert any(a.startswith("solo-learn @ git+https://github.com/vturrisi/") for a in solo)
    assert commands[2][2:] == [".[solo]"]
    quickstart = (REPO / "README.md").read_text().split("```bash", 1)[1].split("```", 1)[0]
    assert f'pip install "{setuptools}" && pip install --no-build-isolation' in quickstart


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
