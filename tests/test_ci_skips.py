"""CI's skip check (.ci/pytest_no_skips.py, run by .ci/run): a test skipped for anything but a
CUDA GPU or the official code fails the run; pytest's own failures keep their status."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

SCRIPT = REPO / ".ci" / "pytest_no_skips.py"


def load():
    spec = importlib.util.spec_from_file_location("pytest_no_skips", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CASES = [
    '<testcase classname="" name="tests.test_study"><skipped message="collection skipped">'
    "('/r/tests/test_study.py', 9, \"Skipped: could not import 'matplotlib': No module named "
    "'matplotlib'\")</skipped></testcase>",
    '<testcase classname="tests.test_step_sync" name="test_cuda[grad]">'
    '<skipped type="pytest.skip" message="needs a CUDA GPU">x</skipped></testcase>',
    '<testcase classname="tests.test_study" name="test_official"><skipped type="pytest.skip" '
    'message="needs the official code: EFFSSL_OFFICIAL_SRC=&lt;dir&gt;">x</skipped></testcase>',
    '<testcase classname="tests.test_x" name="test_xfail">'
    '<skipped type="pytest.xfail" message="known bug" /></testcase>',
    '<testcase classname="tests.test_x" name="test_inline">'
    '<skipped type="pytest.skip" message="scipy is missing">x</skipped></testcase>',
    '<testcase classname="tests.test_x" name="test_ok" />',
]
JUNIT = (
    '<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">'
    + "".join(CASES)
    + "</testsuite></testsuites>"
)


def test_skip_reasons_are_read_from_the_junit_report(tmp_path):
    check = load()
    report = tmp_path / "junit.xml"
    report.write_text(JUNIT)
    skips = check.skipped_tests(report)
    assert skips == [
        ("tests.test_study", "could not import 'matplotlib': No module named 'matplotlib'"),
        ("tests.test_step_sync::test_cuda[grad]", "needs a CUDA GPU"),
        ("tests.test_study::test_official", "needs the official code: EFFSSL_OFFICIAL_SRC=<dir>"),
        ("tests.test_x::test_inline", "scipy is missing"),
    ]  # the xfail is no skip
    assert [check.allowed(reason) for _, reason in skips] == [False, True, True, False]


def run_check(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "-q", "-p", "no:cacheprovider", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def suite(tmp_path) -> Path:
    """A throwaway test folder (no pyproject: the repository's pytest options stay out)."""
    (tmp_path / "test_missing.py").write_text(
        "import pytest\npytest.importorskip('no_such_package_effssl')\n\ndef test_x():\n    pass\n"
    )
    (tmp_path / "test_allowed.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.skipif(True, reason='needs a CUDA GPU')\ndef test_gpu():\n    pass\n\n"
        "@pytest.mark.skipif(True, reason='needs the official code: EFFSSL_OFFICIAL_SRC')\n"
        "def test_official():\n    pass\n\n"
        "def test_ok():\n    pass\n"
    )
    (tmp_path / "test_fails.py").write_text("def test_bad():\n    assert False\n")
    return tmp_path


def test_a_skip_for_a_missing_package_fails_the_run(suite):
    proc = run_check(suite, "test_missing.py", "test_allowed.py")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 test(s) skipped for a reason CI does not allow" in proc.stderr
    assert "test_missing: could not import 'no_such_package_effssl'" in proc.stderr


def test_gpu_and_official_code_skips_pass(suite):
    proc = run_check(suite, "test_allowed.py")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 skipped test(s), each needing a CUDA GPU, the official code" in proc.stdout


def test_pytest_failures_and_empty_runs_keep_failing(suite):
    assert run_check(suite, "test_fails.py").returncode == 1  # pytest's own status
    proc = run_check(suite, "test_allowed.py", "-k", "no_such_test")
    assert proc.returncode == 1 and "pytest collected no tests" in proc.stderr
    assert run_check(suite, "--no-such-option").returncode == 4  # a usage error: pytest's
