"""The package's shape is its architecture: each module says what it owns, the library core
never reaches up into the CLI or the web app, and the README's tree names every module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.support.helpers import ROOT

MODULES = sorted(p.relative_to(ROOT) for folder in ("jobqueue", "web")
                 for p in (ROOT / folder).rglob("*.py"))
CORE = ("jobqueue/db", "jobqueue/worker", "jobqueue/llm", "jobqueue/batches", "jobqueue/sim",
        "jobqueue/schedules")
CORE_FILES = ("jobqueue/jobs.py", "jobqueue/tasks.py", "jobqueue/client.py",
              "jobqueue/errors.py", "jobqueue/config.py", "jobqueue/routing.py",
              "jobqueue/profiles.py", "jobqueue/logs.py", "jobqueue/tokens.py",
              "jobqueue/builtin_tasks.py", "jobqueue/settings.py", "jobqueue/signals.py",
              "jobqueue/workflows.py")


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("path", MODULES, ids=str)
def test_every_module_starts_with_a_docstring(path):
    assert ast.get_docstring(ast.parse((ROOT / path).read_text())), f"{path}: no docstring"


@pytest.mark.parametrize("path", [p for p in MODULES
                                  if str(p).startswith(CORE) or str(p) in CORE_FILES], ids=str)
def test_the_library_core_never_imports_the_cli_or_the_web_app(path):
    bad = {name for name in imports(ROOT / path)
           if name in ("web", "jobqueue.cli") or name.startswith(("web.", "jobqueue.cli."))}
    assert not bad, f"{path} imports {sorted(bad)}"


def test_the_readme_tree_names_every_module():
    text = (ROOT / "README.md").read_text()
    section = text.split("## How it works", 1)[1].split("\n## ", 1)[0]
    tree = section.split("```", 2)[1]
    listed = set()
    folder_stack: list[tuple[int, str]] = []
    for line in tree.splitlines():
        m = re.match(r"^(\s*)([\w./]+)", line)
        if not m:
            continue
        indent, name = len(m[1]), m[2]
        while folder_stack and folder_stack[-1][0] >= indent:
            folder_stack.pop()
        path = "/".join([f for _, f in folder_stack] + [name.rstrip("/")])
        if name.endswith("/"):
            folder_stack.append((indent, name.rstrip("/")))
        else:
            listed.add(path)
    missing = [str(p) for p in MODULES if str(p) not in listed]
    assert not missing, f"README 'How it works' tree lacks: {missing}"


def test_a_worker_process_does_not_import_the_demo_web_or_llm_stacks():
    """Every worker process pays for what `jobqueue worker` imports at start: importing
    every command up front (openai via the demo) once added 1.7 s to each worker's start."""
    import subprocess
    import sys

    code = ("import sys, jobqueue.cli, jobqueue.cli.worker, jobqueue.worker\n"
            "print(','.join(m for m in ('openai', 'flask', 'aiohttp', 'psycopg_pool',\n"
            "               'jobqueue.sim.server', 'jobqueue.llm.runtime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == ""


@pytest.mark.parametrize("path", [p for p in MODULES if p.parts[0] == "web"], ids=str)
def test_no_web_module_reaches_into_another_modules_privates(path):
    """A helper two modules share has a public home (web/dashboard_support.py, say): no web
    module imports an underscore name from another module of the project."""
    bad = []
    for node in ast.walk(ast.parse((ROOT / path).read_text())):
        if isinstance(node, ast.ImportFrom) and node.module \
                and node.module.startswith(("web", "jobqueue")):
            bad += [f"{node.module}.{a.name}" for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")]
    assert not bad, f"{path} imports private names {bad}"
