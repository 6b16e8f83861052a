"""The architecture, as import rules: checked by walking every module's imports.

* ``agents`` (what one user knows and decides) imports nothing of ``server`` or
  ``simulations``: it runs on a device.
* ``server`` (the firm) imports nothing of ``simulations`` and, of the
  collective, only the shared vocabulary: ``agents.protocol`` (wire formats),
  ``agents.errors`` and ``agents.validation``.
* The two Flower apps never import each other.
* No import circle among the project's modules.
* Every third-party package imported is declared in pyproject.toml.
"""

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agents", "server", "simulations")
SHARED_WITH_THE_FIRM = {"agents.protocol", "agents.errors", "agents.validation"}


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every module named by an import anywhere in the file (also inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


IMPORTS = {name: _imports(name, path) for name, path in MODULES.items()}


def _project(deps: set[str]) -> set[str]:
    return {d for d in deps if d in MODULES}


def test_the_walk_sees_every_package():
    assert {"agents.rule", "agents.protocol", "server.server_app", "simulations.engine"} <= set(MODULES)
    assert "agents.rule" in IMPORTS["simulations.state"]  # the walk resolves imports


def test_agents_import_neither_the_firm_nor_the_simulator():
    bad = {(m, d) for m, deps in IMPORTS.items() if m.startswith("agents")
           for d in _project(deps) if d.split(".")[0] in ("server", "simulations")}
    assert not bad


def test_the_firm_imports_only_the_shared_vocabulary():
    bad = {(m, d) for m, deps in IMPORTS.items() if m.startswith("server")
           for d in _project(deps) if d.split(".")[0] == "simulations"
           or (d.split(".")[0] == "agents" and d not in SHARED_WITH_THE_FIRM | {"agents"})}
    assert not bad


def test_the_flower_apps_do_not_import_each_other():
    assert "server.server_app" not in IMPORTS["agents.client_app"]
    assert not _project(IMPORTS["server.server_app"]) & {"agents.client_app", "agents.rule", "agents.knowledge"}


def test_no_import_circle():
    graph = {m: _project(deps) - {m} for m, deps in IMPORTS.items()}
    index, low, stack, on_stack, circles = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not circles


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    deps = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        deps += extra
    names = {re.split(r"[\[<>=!~ ;]", d, maxsplit=1)[0].lower().replace("_", "-") for d in deps}
    if "flwr" in names:  # flwr[simulation] brings ray
        names.add("ray")
    return names


def test_every_imported_package_is_declared():
    distributions = metadata.packages_distributions()
    third_party = {d.split(".")[0] for deps in IMPORTS.values() for d in deps} - set(PACKAGES)
    third_party = {t for t in third_party if t and t not in sys.stdlib_module_names and t != "__future__"}
    missing = set()
    for module in third_party:
        dists = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
        if not dists & _declared():
            missing.add((module, tuple(sorted(dists))))
    assert not missing, f"imported but not declared in pyproject.toml: {sorted(missing)}"


def test_the_shared_layer_checker_agrees():
    """The design's own checker (../shared/tools/check_layers.py), when it is there."""
    checker = ROOT.parent / "shared" / "tools" / "check_layers.py"
    if not checker.exists():
        pytest.skip("no ../shared/tools/check_layers.py beside this clone")
    import subprocess

    done = subprocess.run([sys.executable, str(checker)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
