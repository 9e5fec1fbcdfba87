"""The package's architecture as a contract: layers, public names, no reaching into privates.

The import rules live in ``.importlinter`` (import-linter: layers, generic engines apart from
the studies, the two studies independent, no cycles, private modules kept private); the rules
it cannot express are checked here on the source itself with :mod:`ast`.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest
from importlinter.cli import lint_imports

import emolib
from emolib.paths import REPO_ROOT

#: A module longer than this says why in its docstring ("... lines because ...").
MAX_LINES = 600

PACKAGE_DIR = Path(emolib.__file__).parent
MODULES = sorted(m.name for m in pkgutil.walk_packages(emolib.__path__, "emolib."))
#: Code outside the package that must use its public names only.
CLIENT_FILES = sorted(
    p for d in ("tests", "notebooks", "benchmarks") for p in (REPO_ROOT / d).rglob("*.py")
)
PACKAGE_FILES = sorted(PACKAGE_DIR.rglob("*.py"))


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


def _emolib_imports(tree: ast.AST):
    """``(lineno, module, name)`` of every ``from emolib... import name``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and (
            node.module == "emolib" or node.module.startswith("emolib.")
        ):
            for alias in node.names:
                yield node.lineno, node.module, alias.name, alias.asname or alias.name


def _module_aliases(tree: ast.AST) -> dict[str, str]:
    """Local names bound to emolib modules (``from emolib import rsa``, ``import emolib.x``)."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("emolib") and alias.asname:
                    out[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("emolib"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if full in MODULES:
                    out[alias.asname or alias.name] = full
    return out


def test_import_contracts_are_kept():
    """Layers, generic engines, independent studies, no cycles, private modules: all kept."""
    import logging

    # import-linter configures logging with disable_existing_loggers: give every logger of
    # this process (emolib's among them) back its state, or later tests lose their records
    loggers = [logging.getLogger(n) for n in list(logging.root.manager.loggerDict)]
    disabled = {lg: lg.disabled for lg in loggers if isinstance(lg, logging.Logger)}
    try:
        code = lint_imports(config_filename=str(REPO_ROOT / ".importlinter"), no_cache=True,
                            no_logo=True)
    finally:
        for lg, was in disabled.items():
            lg.disabled = was
    assert code == 0, "an import contract of .importlinter is broken (see the report above)"


@pytest.mark.parametrize("module", [m for m in MODULES if not m.endswith("__main__")])
def test_every_module_declares_its_public_names(module):
    mod = importlib.import_module(module)
    assert hasattr(mod, "__all__") or module == "emolib", f"{module} has no __all__"
    missing = [n for n in getattr(mod, "__all__", []) if not hasattr(mod, n)]
    assert not missing, f"{module}.__all__ lists names it does not define: {missing}"
    assert mod.__doc__ and mod.__doc__.strip(), f"{module} has no docstring"


def test_subpackages_export_what_their_modules_export():
    """A subpackage's ``__all__`` is its API: each name there resolves, none is private."""
    for name in MODULES:
        mod = importlib.import_module(name)
        if hasattr(mod, "__path__"):
            private = [n for n in getattr(mod, "__all__", []) if n.startswith("_")]
            assert not private, f"{name}.__all__ exports private names {private}"


@pytest.mark.parametrize("path", PACKAGE_FILES + CLIENT_FILES, ids=_rel)
def test_no_private_names_of_another_module(path):
    """Nobody imports or reaches into ``_private`` names of another emolib module."""
    tree = ast.parse(path.read_text())
    bad = [f"line {ln}: from {m} import {n}" for ln, m, n, _ in _emolib_imports(tree)
           if n.startswith("_")]
    aliases = _module_aliases(tree)
    bad += [f"line {node.lineno}: {node.value.id}.{node.attr}" for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id in aliases and node.attr.startswith("_")
            and not node.attr.startswith("__")]
    # getattr(module, "_x"), monkeypatch.setattr(module, "_x", ...)
    bad += [f"line {node.lineno}: {ast.unparse(node)[:60]}" for node in ast.walk(tree)
            if isinstance(node, ast.Call) and len(node.args) >= 2
            and isinstance(node.args[0], ast.Name) and node.args[0].id in aliases
            and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
            and node.args[1].value.startswith("_") and not node.args[1].value.startswith("__")]
    assert not bad, f"{_rel(path)} uses private names of emolib modules: {bad}"


@pytest.mark.parametrize("path", CLIENT_FILES, ids=_rel)
def test_notebooks_tests_and_benchmarks_use_public_names(path):
    """What clients import from a module is in that module's ``__all__`` (or a submodule)."""
    tree = ast.parse(path.read_text())
    bad = []
    for ln, module, name, _ in _emolib_imports(tree):
        if f"{module}.{name}" in MODULES:
            continue
        public = getattr(importlib.import_module(module), "__all__", None)
        if public is None or name not in public:
            bad.append(f"line {ln}: {module}.{name}")
    aliases = _module_aliases(tree)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in aliases and not node.attr.startswith("__")):
            full = aliases[node.value.id]
            mod = importlib.import_module(full)
            if f"{full}.{node.attr}" not in MODULES and node.attr not in getattr(
                    mod, "__all__", ()):
                bad.append(f"line {node.lineno}: {full}.{node.attr}")
    assert not bad, f"{_rel(path)} uses names outside the public API: {bad}"


@pytest.mark.parametrize("path", PACKAGE_FILES, ids=_rel)
def test_modules_stay_readable(path):
    n = len(path.read_text().splitlines())
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    assert n <= MAX_LINES or "lines because" in doc, (
        f"{_rel(path)} has {n} lines (> {MAX_LINES}) and its docstring does not say why"
    )
