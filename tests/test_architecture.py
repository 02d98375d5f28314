"""The package's shape: data flows one way, the inference rooms never reach training, benchmarks or TensorFlow.

Read from the source (AST), so a lazy import inside a function counts as much as one at the top of a module.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "pneumo"
# What the app and the CLI run: none of it may import these (at any depth).
INFERENCE_ROOMS = ("pneumo.io", "pneumo.nets", "pneumo.checks", "pneumo.explain", "pneumo.present", "pneumo.pipeline",
                   "pneumo.predict", "pneumo.config")  # fmt: skip
FORBIDDEN = ("pneumo.training", "pneumo.bench", "pneumo.batch", "tensorflow", "keras", "sklearn", "ray")


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path = ROOT) -> set[str]:
    """Every module a file imports (absolute names; ``from a import b`` gives a and a.b), wherever the import is."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return out


def graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """pneumo module -> every module it imports (pneumo's and outside ones)."""
    files = {module_name(p, package.parent): p for p in package.rglob("*.py")}
    return {m: imports_of(p, package.parent) for m, p in files.items()}


def internal(g: dict[str, set[str]]) -> dict[str, set[str]]:
    return {m: {t for t in deps if t in g and t != m and t != "pneumo"} for m, deps in g.items()}


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(g[m]):
            if state.get(t) == 1:
                return stack[stack.index(t) :] + [t]
            if t not in state and (found := visit(t)):
                return found
        state[m] = 2
        stack.pop()
        return None

    for m in sorted(g):
        if m not in state and (found := visit(m)):
            return found
    return None


def reachable(g: dict[str, set[str]], start: str) -> set[str]:
    """Every module (pneumo's and outside ones) that importing ``start`` can import."""
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        for t in g.get(m, ()):
            if t not in seen:
                seen.add(t)
                todo.append(t)
    return seen


def test_the_graph_finds_a_planted_cycle_and_a_lazy_forbidden_import(tmp_path):
    pkg = tmp_path / "pneumo"
    (pkg / "io").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "io" / "__init__.py").write_text("from .decode import load\n")
    (pkg / "io" / "decode.py").write_text(
        "def load():\n    from pneumo.pipeline import run\n"
    )  # lazy, inside a function
    (pkg / "pipeline.py").write_text("from pneumo.io import load\nimport tensorflow as tf\n")
    g = graph(pkg)
    assert find_cycle(internal(g)) is not None
    assert "tensorflow" in reachable(g, "pneumo.io.decode")


def test_no_import_cycles_in_the_package():
    assert find_cycle(internal(graph())) is None


def test_inference_rooms_never_import_training_benchmarks_or_tensorflow():
    g = graph()
    for start in [m for m in g if m.startswith(INFERENCE_ROOMS)]:
        bad = sorted(t for t in reachable(g, start) if t.startswith(FORBIDDEN))
        assert not bad, f"{start} reaches {bad}"


def test_the_app_pages_never_import_training_benchmarks_or_tensorflow():
    g = graph()
    for page in [ROOT / "app.py", *sorted((ROOT / "app_pages").glob("*.py"))]:
        deps = imports_of(page)
        bad = sorted(t for t in deps | {r for d in deps for r in reachable(g, d)} if t.startswith(FORBIDDEN))
        assert not bad, f"{page.name} reaches {bad}"


def test_public_names_resolve():
    import pneumo

    for name in pneumo.__all__:
        assert getattr(pneumo, name) is not None, name
    with pytest.raises(AttributeError):
        pneumo.no_such_name  # noqa: B018


@pytest.mark.slow
def test_cli_run_on_the_samples_imports_no_training_benchmark_tensorflow_or_keras():
    """What `python -X importtime -m pneumo.predict assets/samples` reports, the maintainers' check."""
    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "pneumo.predict", "assets/samples"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    names = [line.rsplit("|", 1)[-1].strip() for line in res.stderr.splitlines() if line.startswith("import time:")]
    assert "pneumo.pipeline" in names  # the report is read right
    assert not [n for n in names if n.split(".")[0] in ("tensorflow", "keras", "sklearn", "ray")]
    assert not [n for n in names if n.startswith(("pneumo.training", "pneumo.bench", "pneumo.batch"))]
    rows = res.stdout.strip().splitlines()
    assert len(rows) == 5 and rows[0].startswith("path,probability")


def test_every_command_answers_version():
    import pneumo

    for module in ("pneumo.predict", "pneumo.training.export", "pneumo.training.train", "pneumo.bench", "pneumo.batch"):
        res = subprocess.run([sys.executable, "-m", module, "--version"], cwd=ROOT, capture_output=True, text=True,
                             timeout=120)  # fmt: skip
        assert res.returncode == 0 and res.stdout.strip().endswith(pneumo.__version__), (module, res.stderr[-500:])


def test_pyproject_scripts_point_at_real_functions():
    import importlib
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"], "no console scripts"
    for name, target in project["scripts"].items():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), name
    pins = [ln.split("#")[0].strip().lower() for ln in (ROOT / "requirements.txt").read_text().splitlines()]
    assert [p for p in pins if p] and not [p for p in pins if p.startswith(("tensorflow", "keras", "tf-"))]
    lo = project["requires-python"].split(",")[0].removeprefix(">=")
    assert tuple(int(v) for v in lo.split(".")) <= sys.version_info[:2]  # the Python the tests run on is allowed
