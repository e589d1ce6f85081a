"""CI's test run: pytest with the given arguments, then a check of every skipped test.

    python3 .ci/pytest_no_skips.py -q [pytest arguments]

A skip hides a missing install step: a test that skips for a package we declare passes CI
on a machine where that package is missing. So the only skips allowed are the ones that
need what CI machines never have: a CUDA GPU, or the official EffSSL code
(``EFFSSL_OFFICIAL_SRC``). Any other skip fails the run, naming the test and its reason.

Exit status: pytest's when it failed; 1 when pytest collected no test (its status 5) or
when a skip is not allowed; else 0. The skips are read from pytest's JUnit XML report,
written to a temporary folder. Expected failures (xfail) are not skips.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

#: (what the skip needs, pattern its reason matches)
ALLOWED = (
    ("a CUDA GPU", re.compile(r"\bCUDA\b|\bGPUs?\b", re.IGNORECASE)),
    ("the official code", re.compile(r"EFFSSL_OFFICIAL_SRC|official code", re.IGNORECASE)),
)


def skipped_tests(junit_xml: Path) -> list[tuple[str, str]]:
    """``(test id, reason)`` of every skipped test (module-level skips included) in a JUnit
    XML report written by pytest."""
    skips = []
    for case in ET.parse(junit_xml).getroot().iter("testcase"):
        for skipped in case.findall("skipped"):
            if skipped.get("type") == "pytest.xfail":
                continue
            name = "::".join(p for p in (case.get("classname", ""), case.get("name", "")) if p)
            skips.append((name, skip_reason(skipped.get("message", ""), skipped.text or "")))
    return skips


def skip_reason(message: str, text: str) -> str:
    """The reason a test was skipped. A module skipped at collection (``importorskip`` at
    module level) has the message "collection skipped" and the reason in its text,
    ``('path', line, 'Skipped: reason')``."""
    if message and message != "collection skipped":
        return message
    found = re.search(r"Skipped: (.*?)['\"]?\)?$", text.strip(), re.DOTALL)
    return found.group(1) if found else (text.strip() or message)


def allowed(reason: str) -> bool:
    return any(pattern.search(reason) for _, pattern in ALLOWED)


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        status = subprocess.call([sys.executable, "-m", "pytest", f"--junitxml={report}", *argv])
        if status == 5:
            print("error: pytest collected no tests", file=sys.stderr)
            return 1
        if not report.exists():  # pytest stopped before writing it (a usage error)
            return status or 1
        skips = skipped_tests(report)
    bad = [(name, reason) for name, reason in skips if not allowed(reason)]
    needs = ", ".join(what for what, _ in ALLOWED)
    if bad:
        print(
            f"error: {len(bad)} test(s) skipped for a reason CI does not allow (allowed: "
            f"needing {needs}); install what they need:",
            file=sys.stderr,
        )
        for name, reason in bad:
            print(f"  {name}: {reason}", file=sys.stderr)
        return status or 1
    if skips:
        print(f"{len(skips)} skipped test(s), each needing {needs}")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
