"""Test helper: a stand-in ``pip`` that models what the README's install commands meet in a
fresh ``python3 -m venv``, without the network (tests/test_install.py).

``python fresh_venv_pip.py install [options] REQUIREMENT ...`` reads and updates the venv's
state in the JSON file ``$FAKE_PIP_STATE``: the setuptools version (at first the one that
``ensurepip`` bundles with this Python, as a fresh venv gets it; none from Python 3.12), whether
``wheel`` is installed (not in a fresh venv) and what is installed. It exits 1 with pip's or
setuptools' own error where the real install would fail:

* ``setuptools<SPEC>`` keeps the installed setuptools if the specifier allows it (pip upgrades
  nothing without ``--upgrade``), else takes the newest of :data:`SETUPTOOLS_RELEASES` that it
  allows (pip takes the newest allowed release from PyPI);
* solo-learn from its repository is a source build of a ``setup.py`` that imports
  ``pkg_resources``. With ``--no-build-isolation`` it builds with the venv's setuptools, which
  needs ``bdist_wheel`` (built into setuptools since 70.1, else from ``wheel``) and
  ``pkg_resources`` (removed in setuptools 81); without it, pip's isolated build environment
  gets the newest setuptools, which has no ``pkg_resources``. Without ``--no-deps`` pip would
  replace the installed Lightning and torchmetrics by solo-learn's pins (``lightning==2.1.2``,
  ``torchmetrics<0.12``), which the README forbids;
* ``.[extra,...]`` is this repository (its ``pyproject.toml`` in the working directory):
  every extra must be one that the project defines; its dependencies (torch) raise setuptools
  to the newest release, as a newer torch may (README: the third command may upgrade
  setuptools again);
* anything else is refused: the README's install block names nothing else.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import Version

try:
    import tomllib
except ImportError:  # Python 3.10
    from pip._vendor import tomli as tomllib

#: setuptools releases around the two changes that matter (70.1: ``bdist_wheel`` built in;
#: 81: ``pkg_resources`` removed); 84.2.1 stands for the newest
SETUPTOOLS_RELEASES = [
    "65.5.0",
    "69.5.1",
    "70.0.0",
    "70.1.0",
    "75.8.0",
    "80.9.0",
    "81.0.0",
    "84.2.1",
]
BDIST_WHEEL_BUILT_IN = Version("70.1")
NO_PKG_RESOURCES = Version("81")
SOLO_REPO = "git+https://github.com/vturrisi/solo-learn"


def fresh_venv_state() -> dict:
    """What ``python3 -m venv`` installs with this Python: ensurepip's bundled packages."""
    import ensurepip

    if hasattr(ensurepip, "_get_packages"):  # 3.11: {"pip": ..., "setuptools": ...}
        bundled = {name: p.version for name, p in ensurepip._get_packages().items()}
    else:  # the wheels that ensurepip installs
        wheels = (Path(ensurepip.__file__).parent / "_bundled").glob("*.whl")
        bundled = dict(w.name.split("-")[:2] for w in wheels)
    setuptools = bundled.get("setuptools")
    return {"setuptools": setuptools, "wheel": False, "installed": {}}


def fail(message: str) -> None:
    print(message, file=sys.stderr)
    sys.exit(1)


def setuptools_after(requirement: Requirement, installed: str | None) -> str:
    """pip keeps an installed release that the specifier allows (no ``--upgrade``), else takes
    the newest allowed one."""
    if installed is not None and requirement.specifier.contains(installed):
        return installed
    allowed = [v for v in SETUPTOOLS_RELEASES if requirement.specifier.contains(v)]
    if not allowed:
        fail(f"ERROR: No matching distribution found for {requirement}")
    return max(allowed, key=Version)


def build_solo(state: dict, isolated: bool) -> None:
    """A source build of solo-learn's setup.py (``import pkg_resources``, then bdist_wheel)."""
    setuptools = SETUPTOOLS_RELEASES[-1] if isolated else state["setuptools"]
    if setuptools is None:
        fail("ERROR: Could not build solo-learn: No module named 'setuptools'")
    if Version(setuptools) >= NO_PKG_RESOURCES:
        fail(
            "ModuleNotFoundError: No module named 'pkg_resources' "
            f"(setuptools {setuptools}{' in the isolated build environment' if isolated else ''})"
        )
    if Version(setuptools) < BDIST_WHEEL_BUILT_IN and not state["wheel"]:
        fail(f"error: invalid command 'bdist_wheel' (setuptools {setuptools}, no wheel package)")


def install_project(state: dict, requirement: Requirement, path: Path) -> None:
    pyproject = path / "pyproject.toml"
    if not pyproject.is_file():
        fail(f"ERROR: {path} is not a project: no pyproject.toml")
    project = tomllib.loads(pyproject.read_text())["project"]
    extras = project.get("optional-dependencies", {})
    unknown = sorted(set(requirement.extras) - set(extras))
    if unknown:  # pip only warns; an install without them is not what the README promises
        fail(f"WARNING: {project['name']} does not provide the extra(s) {unknown}")
    state["installed"][project["name"]] = sorted(requirement.extras)
    state["setuptools"] = SETUPTOOLS_RELEASES[-1]  # torch's own requirement may raise it


def main(argv: list[str]) -> None:
    if not argv or argv[0] != "install":
        fail(f"ERROR: the stand-in pip knows only `pip install`, not {argv}")
    options = {a for a in argv[1:] if a.startswith("-")}
    unknown = options - {"--no-build-isolation", "--no-deps"}
    if unknown:
        fail(f"ERROR: the README's install commands use no {sorted(unknown)}")
    targets = [a for a in argv[1:] if not a.startswith("-")]
    if not targets:
        fail("ERROR: You must give at least one requirement to install")
    state_file = Path(os.environ["FAKE_PIP_STATE"])
    state = json.loads(state_file.read_text()) if state_file.exists() else fresh_venv_state()
    for target in targets:
        local = re.fullmatch(r"(\.[^\[]*)(\[.*\])?", target)
        try:
            requirement = Requirement(f"project{local.group(2) or ''}" if local else target)
        except InvalidRequirement as err:
            fail(f"ERROR: Invalid requirement: {target!r}: {err}")
        if local:
            install_project(state, requirement, Path(local.group(1)).resolve())
        elif requirement.name == "setuptools":
            state["setuptools"] = setuptools_after(requirement, state["setuptools"])
        elif requirement.name == "solo-learn" and (requirement.url or "").startswith(SOLO_REPO):
            build_solo(state, isolated="--no-build-isolation" not in options)
            if "--no-deps" not in options:
                fail("ERROR: pip would replace lightning and torchmetrics by solo-learn's pins")
            state["installed"]["solo-learn"] = requirement.url
        else:
            fail(f"ERROR: the stand-in pip does not know {target!r}")
    state_file.write_text(json.dumps(state))


if __name__ == "__main__":
    main(sys.argv[1:])
