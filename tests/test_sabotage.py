"""Sabotage: break the code on purpose, one way at a time, and check that the suite goes red.

Each case copies the repository to a temporary folder (models/ and assets/ linked, not copied), makes one small edit
to the library and runs the tests that should catch it there. A control run of the same tests on the unedited copy
must pass, so a red run means the edit was caught, not that the copy is broken. Slow: about a minute a case.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Sabotage:
    name: str
    file: str  # relative to the repository root
    old: str  # an exact line (or lines) of that file
    new: str
    caught_by: tuple[str, ...]  # test ids, relative to the repository root

    def __str__(self) -> str:
        return self.name


_CAM_LINE = (
    "        p, cam = forward_cam(models.classifier.model, x, models.classifier.gradcam_layer)  # (b,), (b, h, w)\n"
)
CASES = (
    Sabotage("constant probability", "pneumo/pipeline.py", _CAM_LINE, _CAM_LINE + "        p = np.full_like(p, 0.5)\n",
             ("tests/test_committed_model.py",)),
    Sabotage("CAM sign flipped", "pneumo/pipeline.py", _CAM_LINE, _CAM_LINE + "        cam = -cam\n",
             ("tests/test_committed_behaviour.py::test_the_drawn_map_is_the_reference_gradcam_of_what_the_classifier_saw",)),
    Sabotage("classifier sees outside the lungs", "pneumo/checks/lungs.py",
             "    view = np.where(grown, x224, fill).astype(np.uint8)  # (224, 224)\n",
             "    view = x224.astype(np.uint8)  # (224, 224)\n",
             ("tests/checks/test_lungs.py",)),
    Sabotage("gate never refuses", "pneumo/checks/scope.py",
             '    in_scope = kind[:, 0] >= gate_threshold(gate, "in_scope")\n',
             "    in_scope = np.ones(len(x), dtype=bool)\n",
             ("tests/test_committed_behaviour.py::test_the_gate_refuses_pictures_that_are_no_radiograph",)),
    Sabotage("app and CLI decode differently", "pneumo/pipeline.py",
             "        img = load_image(data, name=name, **ANALYSIS_DECODE)\n",
             "        img = load_image(data, name=name)\n",
             ("tests/test_committed_model.py::test_cli_and_app_decode_alike_to_the_last_digit",)),
)  # fmt: skip


def copy_repo(dest: Path) -> Path:
    """The repository's code and tests in ``dest`` (models/ and assets/ as links to the real ones)."""
    ignore = shutil.ignore_patterns("__pycache__", ".pytest_cache", ".ruff_cache", "*.pyc")
    for part in ("pneumo", "app_pages", "tests"):
        shutil.copytree(ROOT / part, dest / part, symlinks=True, ignore=ignore)
    for part in ("app.py", "pyproject.toml"):
        shutil.copy2(ROOT / part, dest / part)
    for part in ("models", "assets"):
        (dest / part).symlink_to(ROOT / part, target_is_directory=True)
    return dest


def run_tests(repo: Path, tests: tuple[str, ...]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    return subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return copy_repo(tmp_path_factory.mktemp("sabotage") / "repo")


def test_the_unedited_copy_passes_every_catching_test(repo):
    tests = tuple(dict.fromkeys(t for case in CASES for t in case.caught_by))
    res = run_tests(repo, tests)
    assert res.returncode == 0, res.stdout[-3000:]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_the_suite_catches(case: Sabotage, repo: Path):
    target = repo / case.file
    original = target.read_text()
    assert original.count(case.old) == 1, f"the line to break is gone from {case.file}: update this case"
    target.write_text(original.replace(case.old, case.new))
    try:
        res = run_tests(repo, case.caught_by)
    finally:
        target.write_text(original)
    assert res.returncode == 1, f"{case.name} was not caught (rc {res.returncode}):\n{res.stdout[-3000:]}"
    assert " failed" in res.stdout.splitlines()[-1]
