"""The house rules that a reader of the code relies on, checked on the source itself:
one ``tuneops`` namespace, no Prefect below flows/, no import circles, and the spine reaching
the text task only through the task seam."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE_FOLDERS = ("components", "flows", "serving")


def _modules() -> dict[str, Path]:
    """Every module of the package, by its dotted ``tuneops.*`` name."""
    modules = {"tuneops": ROOT / "__init__.py"}
    for folder in SOURCE_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(("tuneops", *parts))] = path
    return modules


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or lazily inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_every_package_of_the_tree_is_installed():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    in_tree = {name for name, path in _modules().items() if path.name == "__init__.py"}
    assert in_tree - listed == set(), "add these packages to pyproject.toml [tool.setuptools] packages"
    assert listed - in_tree == set(), "pyproject.toml lists packages the tree does not have"


def test_components_and_serving_never_import_prefect():
    offenders = {name: sorted(i for i in _imports(path) if i.split(".")[0] == "prefect")
                 for name, path in _modules().items() if not name.startswith("tuneops.flows")}
    assert {name: found for name, found in offenders.items() if found} == {}


def test_no_import_circles():
    modules = _modules()
    graph = {name: sorted(i for i in _imports(path) if i in modules and i != name) for name, path in modules.items()}
    # A package's __init__ is imported with each of its modules, not a real edge of the design.
    graph = {name: [i for i in targets if not name.startswith(i + ".")] for name, targets in graph.items()}
    state: dict[str, int] = {}
    circles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in graph[node]:
            if state.get(target) == 1:
                circles.append(trail[trail.index(target):] + [target])
            elif target not in state:
                visit(target, trail + [target])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])
    assert circles == []


def test_only_the_task_registry_and_the_text_task_name_text_classification():
    """The spine holds a Task; which one is decided in tasks.registry from PipelineConfig.task."""
    text_modules = ("tuneops.components.tasks.text_classification", "tuneops.components.tasks.text")
    offenders = []
    for name, path in _modules().items():
        if name.startswith("tuneops.components.tasks"):
            continue
        if any(i == t or i.startswith(t + ".") for i in _imports(path) for t in text_modules):
            offenders.append(name)
    assert offenders == []


def test_import_tuneops_from_outside_the_repository_is_cheap_and_generic_names_are_free(tmp_path: Path):
    script = (
        "import sys, tuneops; print(tuneops.__version__); "
        "print(sorted(m for m in ('torch', 'prefect', 'bentoml', 'transformers') if m in sys.modules)); "
        "import importlib.util as u; print([u.find_spec(n) is None for n in ('components', 'flows', 'serving')])"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    version, heavy, free = result.stdout.splitlines()
    assert version and version != "0.0.0+unknown"
    assert heavy == "[]"  # `import tuneops` starts nothing and pulls in no framework
    assert free == "[True, True, True]"


def test_every_benchmark_accepts_quick_and_ends_with_its_figures_in_one_format():
    scripts = sorted(path for path in (ROOT / "benchmarks").glob("bench_*.py"))
    assert len(scripts) >= 6
    for script in scripts:
        shown = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
        assert shown.returncode == 0 and "--quick" in shown.stdout, (script.name, shown.stderr[-500:])
        # The closing lines come from the one formatter, benchmarks/figures.py.
        assert "figures" in _imports(script) and "figure_line(" in script.read_text(), script.name
    from importlib.util import module_from_spec, spec_from_file_location

    spec = spec_from_file_location("figures", ROOT / "benchmarks" / "figures.py")
    figures = module_from_spec(spec)
    spec.loader.exec_module(figures)
    assert figures.figure_line("serve_vs_bare_torch", 0.853, 0.7) == "serve_vs_bare_torch: 0.85 x (goal >= 0.70 x)"
    assert figures.figure_line("validation_vs_pandas", None, 0.33) == "validation_vs_pandas: n/a x (goal >= 0.33 x)"
