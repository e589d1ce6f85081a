"""What the console entry points print: no import-time warnings of timm or solo-learn."""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path

import pytest
from conftest import host_warnings, python_cmd, require_solo

require_solo()

import effssl_plugin  # noqa: E402

# runs a module as ``python -m`` does, then says whether solo-learn was imported, so a test
# that sees no warning knows the imports that print them did happen
RUN_MODULE = """
import runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
finally:
    print("solo imported:", "solo.methods" in sys.modules)
"""


def test_host_warnings_finds_timm_and_solo_warning_lines():
    stderr = "\n".join(
        [
            "/x/site-packages/timm/models/helpers.py:7: FutureWarning: Importing from timm.m",
            "  warnings.warn(...)",
            "/x/site-packages/solo/backbones/convnext/convnext.py:26: UserWarning: Overwriting",
            "/x/site-packages/torch/utils/data/dataloader.py:759: UserWarning: 'pin_memory'",
            "effssl-knn: error: checkpoint /x does not exist",
        ]
    )
    assert host_warnings(stderr) == [stderr.splitlines()[0], stderr.splitlines()[2]]


def test_quiet_imports_hides_host_warnings_in_the_block_only_and_keeps_library_filters():
    message = "Overwriting convnext_tiny in registry with solo.backbones.convnext.convnext"
    before = list(warnings.filters)
    with effssl_plugin.quiet_imports():
        warnings.filterwarnings("ignore", message="a library's own filter")  # as torch does
        library_filter = warnings.filters[0]
        with warnings.catch_warnings(record=True) as inside:
            warnings.warn(message, UserWarning, stacklevel=1)
    try:
        assert inside == []
        assert warnings.filters == [library_filter, *before]  # ours gone, the library's kept
        with warnings.catch_warnings(record=True) as after:
            warnings.warn(message, UserWarning, stacklevel=1)
        assert [str(w.message) for w in after] == [message]
    finally:
        warnings.filters.remove(library_filter)


@pytest.mark.slow  # a subprocess launch
def test_effssl_knn_prints_no_timm_or_solo_import_warnings(tmp_path: Path):
    """effssl-knn imports solo-learn before it finds the checkpoint missing. (The end-to-end
    tests check the same on real runs of effssl-pretrain, effssl-knn and effssl-linear.)"""
    cmd = python_cmd("-c", RUN_MODULE, "effssl_plugin.main_knn", str(tmp_path / "missing"))
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert "solo imported: True" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("effssl-knn: error: "), proc.stderr
    assert host_warnings(proc.stderr) == [], proc.stderr
