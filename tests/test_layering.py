"""The layers of the design hold (README, "Architecture"): checked on the source, so a
new import across a layer fails here before it becomes a cycle or an I/O-bound rule."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = (
    "rules",
    "models",
    "partners",
    "runtime",
    "readmodels",
    "tasks",
    "services",
    "flows",
    "deployments",
    "portal",
    "cli",
)
# package -> packages (or modules) it must never import. From the top: cli and
# deployments, flows, services (starting a run: lease, audit, sign-off), tasks (steps) and
# readmodels (reads), runtime (how a process is built), partners, models, rules.
ABOVE_TASKS = {"services", "flows", "deployments", "portal", "cli"}
FORBIDDEN = {
    "rules": {"models", "partners", "runtime", "readmodels", "tasks", *ABOVE_TASKS},
    "models": {"partners", "runtime", "readmodels", "tasks", *ABOVE_TASKS},
    "partners": {"runtime", "readmodels", "tasks", *ABOVE_TASKS},
    "runtime": {"readmodels", "tasks", *ABOVE_TASKS},
    "readmodels": {"runtime", *ABOVE_TASKS},
    "tasks": ABOVE_TASKS,
    "services": {"flows", "deployments", "portal", "cli"},
    "flows": {"deployments", "portal", "cli"},
    "portal": {"runtime", "readmodels", "tasks", "services", "flows", "deployments", "cli"},
}
# Known crossings, each with its reason; the list may only shrink.
ALLOWED: set[tuple[str, str]] = set()
IO_MODULES = {
    "os",
    "requests",
    "httpx",
    "sqlalchemy",
    "sqlmodel",
    "prefect",
    "socket",
    "subprocess",
}


def _modules(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "simulator" not in p.parts[:-1])


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_layer_imports_one_above_it(package):
    crossings = []
    for path in _modules(package):
        rel = str(path.relative_to(ROOT))
        for name in _imports(path):
            if name.split(".")[0] in FORBIDDEN[package] and (rel, name) not in ALLOWED:
                crossings.append(f"{rel} imports {name}")
    assert crossings == []


def test_models_take_from_rules_only_the_wave_settings_and_the_vocabulary():
    """Definitions, never a decision: the Wave table's defaults (rules.settings) and the
    enums the tables store (rules.enums, re-exported by models/enums.py)."""
    for path in _modules("models"):
        for name in _imports(path):
            if name.split(".")[0] == "rules":
                assert name in ("rules.settings", "rules.enums"), f"{path.name} imports {name}"


def test_no_layers_import_each_other_in_a_cycle():
    """The packages' imports form no cycle (a -> b -> ... -> a), whatever the FORBIDDEN
    table above says or misses."""
    graph = {
        package: {
            name.split(".")[0]
            for path in _modules(package)
            for name in _imports(path)
            if name.split(".")[0] in LAYERS and name.split(".")[0] != package
        }
        for package in LAYERS
    }

    def cycle_from(package: str, path: tuple[str, ...]) -> tuple[str, ...] | None:
        for other in sorted(graph[package]):
            if other in path:
                return (*path[path.index(other) :], other)
            found = cycle_from(other, (*path, other))
            if found:
                return found
        return None

    cycles = [c for package in LAYERS if (c := cycle_from(package, (package,)))]
    assert cycles == [], " -> ".join(cycles[0])


def test_rules_do_no_io():
    for path in _modules("rules"):
        io = [n for n in _imports(path) if n.split(".")[0] in IO_MODULES]
        assert io == [], f"{path.name} imports {io}"


def _reads_environment(node: ast.AST) -> bool:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Attribute) and sub.attr in ("environ", "getenv"):
            return True
        if isinstance(sub, ast.Name) and sub.id in ("environ", "getenv"):
            return True
    return False


def test_nothing_reads_the_environment_at_import_time():
    """Module-level statements (not function bodies) never touch os.environ: settings
    are read once, by models/config.py's read_settings, when a process starts."""
    offenders = []
    for package in LAYERS:
        for path in _modules(package):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for stmt in tree.body:
                if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    # a class body runs at import too; its methods do not
                    body = stmt.body if isinstance(stmt, ast.ClassDef) else []
                    stmts = [s for s in body if not isinstance(s, ast.FunctionDef)]
                else:
                    stmts = [stmt]
                offenders += [
                    f"{path.relative_to(ROOT)}:{s.lineno}" for s in stmts if _reads_environment(s)
                ]
    assert offenders == []


def _names_a_prakerja_variable(arg: ast.AST) -> bool:
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value.startswith("PRAKERJA_")
    return isinstance(arg, ast.Name | ast.Attribute) and (
        getattr(arg, "id", None) or getattr(arg, "attr", "")
    ).endswith("_ENV")


def test_prakerja_variables_are_read_only_through_the_settings():
    """No os.environ.get / os.getenv / os.environ[...] of a PRAKERJA_* variable anywhere
    in the layers: models/config.py's Settings reads them (the partners file's
    api_key_env variables are the file's, not settings, and read by partners/config.py)."""
    found = []
    for package in LAYERS:
        for path in _modules(package):
            rel = str(path.relative_to(ROOT))
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("get", "getenv")
                    and _reads_environment(node.func)
                    and node.args
                    and _names_a_prakerja_variable(node.args[0])
                ) or (
                    isinstance(node, ast.Subscript)
                    and _reads_environment(node.value)
                    and _names_a_prakerja_variable(node.slice)
                ):
                    found.append(f"{rel}:{node.lineno}")
    assert found == []


# Where the process's environment may be read at all: the settings (read once when a
# process starts), the partners file's own key variables, the CLI's defaults for Prefect's
# settings, and the login name of an operator without a passwd entry.
READS_THE_ENVIRONMENT = {
    "models/config.py",
    "partners/config.py",
    "cli/root.py",
    "tasks/audit.py",
}


def test_the_environment_is_read_only_where_a_process_starts():
    """Nothing reads os.environ after start-up: settings are read once
    (models/config.py) and handed to what needs them (runtime/app.py's build_app)."""
    found = []
    for package in LAYERS:
        for path in _modules(package):
            rel = str(path.relative_to(ROOT))
            if rel in READS_THE_ENVIRONMENT:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv"):
                    found.append(f"{rel}:{node.lineno}")
    assert found == []


def test_no_settings_are_handed_to_a_child_through_the_environment():
    """A PRAKERJA_* variable is never written (os.environ[...] = ..., setdefault, putenv):
    a child process gets its settings passed explicitly (the worker pool's initializer,
    the dashboard's app factory)."""
    found = []
    for package in LAYERS:
        for path in _modules(package):
            rel = str(path.relative_to(ROOT))
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Assign):
                    for target in node.targets:
                        if (
                            isinstance(target, ast.Subscript)
                            and _reads_environment(target.value)
                            and _names_a_prakerja_variable(target.slice)
                        ):
                            found.append(f"{rel}:{node.lineno}")
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("setdefault", "putenv", "update")
                    and _reads_environment(node.func)
                    and node.args
                    and _names_a_prakerja_variable(node.args[0])
                ):
                    found.append(f"{rel}:{node.lineno}")
    assert found == []


def test_one_module_builds_what_a_process_runs():
    """Engines come from models/db.py's one factory; partner clients and the shared
    limiter are built only by runtime/app.py (build_app), the composition root."""
    builders = {"build_partners": [], "limiter_for": [], "create_engine": []}
    for package in LAYERS:
        for path in _modules(package):
            rel = str(path.relative_to(ROOT))
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call):
                    name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                    if name in builders:
                        builders[name].append(rel)
    assert set(builders["build_partners"]) == {"runtime/app.py"}
    assert set(builders["limiter_for"]) == {"runtime/app.py"}
    # The database's rate buckets take tokens on a small autocommit pool of their own,
    # beside the program's engine (partners/shared_limits.py).
    assert set(builders["create_engine"]) == {"models/db.py", "partners/shared_limits.py"}


def test_tasks_hold_only_steps():
    """tasks/ has no process set-up or terminal output: nothing there draws on the
    terminal or serves (the CLI's output is in cli/, process set-up in runtime/)."""
    found = []
    for path in _modules("tasks"):
        rel = str(path.relative_to(ROOT))
        for name in _imports(path):
            if name.split(".")[0] in ("click", "rich", "uvicorn"):
                found.append(f"{rel} imports {name}")
    assert found == []
