"""The layering of issue 18, as far as import-linter does not check it (its contracts run in `make lint`).

- No module imports another module's ``_private`` name: neither ``from m import _x`` nor ``m._x`` on an
  imported module. A name used by two modules is public, and says so in its module's ``__all__``.
- No import cycle between any two modules, imports written inside functions included.
- Every subpackage of ``registry`` states its public names in ``__all__``.
- git and dvc are started from one module, ``registry.core.vcs``.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("registry", "generators", "policies")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The module of ours that ``name`` (a module or a module's attribute) lies in."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every import in ``module``, at any depth."""
    path = MODULES[module]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if full in MODULES:
                    out.append((full, None, node.lineno))
                elif (target := _resolve(node.module)) is not None:
                    out.append((target, alias.name, node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if (target := _resolve(alias.name)) is not None:
                    out.append((target, None, node.lineno))
    return out


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_module_imports_another_modules_private_name() -> None:
    found = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        bound: dict[str, str] = {}  # local name -> module of ours it names
        for target, name, line in _imports(module):
            if target == module:
                continue
            if name is not None and _private(name):
                found.append(f"{module}:{line} imports {target}.{name}")
            if any(_private(part) for part in target.split(".")[1:]) and not target.startswith(
                module.rpartition(".")[0] + "."
            ):
                found.append(f"{module}:{line} imports the private module {target}")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    if f"{node.module}.{alias.name}" in MODULES:
                        bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in MODULES and alias.asname:
                        bound[alias.asname] = alias.name
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in bound
                and _private(node.attr)
                and bound[node.value.id] != module
            ):
                found.append(f"{module}:{node.lineno} uses {bound[node.value.id]}.{node.attr}")
    assert found == []


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), imports at any depth."""
    edges = {m: sorted({t for t, _, _ in _imports(m) if t != m}) for m in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for m in sorted(MODULES):
        if m not in index:
            visit(m)
    return found


def test_no_import_cycle_even_inside_functions() -> None:
    # A package's __init__ that re-exports its modules is an edge package -> module; a module that imports
    # its own package would close a cycle through it, and is named here like any other.
    assert _cycles() == []


SUBPACKAGES = [
    "registry.core",
    "registry.records",
    "registry.store",
    "registry.trust",
    "registry.exports",
    "registry.releases",
    "registry.downstream",
    "registry.lineage",
    "registry.cli",
    "generators",
    "generators.backends",
    "generators.tiny_digits",
    "policies",
    "policies.checks",
]


@pytest.mark.parametrize("package", SUBPACKAGES)
def test_every_subpackage_states_its_public_names(package: str) -> None:
    mod = importlib.import_module(package)
    names = getattr(mod, "__all__", None)
    assert names, f"{package}/__init__.py has no __all__"
    for name in names:
        assert hasattr(mod, name) or importlib.util.find_spec(f"{package}.{name}"), f"{package}.{name}"


def test_git_and_dvc_are_started_from_one_module() -> None:
    starts = re.compile(r"subprocess\.(run|Popen|call|check_call|check_output)\(")
    found = [
        f"{m}" for m, path in MODULES.items() if m != "registry.core.vcs" and starts.search(path.read_text())
    ]
    # generators/tiny_sd.py is a script that builds a test pipeline; it starts no git or dvc.
    assert found == []


def test_modules_and_functions_are_within_the_limits_or_say_why():
    """No module over about 600 lines; a function over 80 is listed in scripts/sizes.py with its reason."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "sizes.py")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout


# registry's public facade as it was before issue 18's move (registry/__init__.py); it keeps every name
FACADE = [
    "AuditEvent",
    "DatasetProfile",
    "GenerationRequest",
    "GeneratorRef",
    "GeneratorSpec",
    "IntendedUse",
    "PolicyPack",
    "PolicyReport",
    "Recipe",
    "Release",
    "RuleResult",
    "SampleRecord",
    "SourceRef",
    "SynthregError",
    "TrustRoot",
    "Waiver",
    "approve",
    "check_manifest",
    "diff",
    "doctor",
    "find_sample",
    "impact",
    "keygen",
    "list_models",
    "list_releases",
    "list_status",
    "load_params",
    "load_recipe",
    "load_release",
    "load_trust",
    "log_dataset",
    "open_release",
    "pull",
    "read_table",
    "release",
    "trace_image",
    "trace_model",
    "trace_run",
    "train",
    "verify",
    "waive",
    "withdraw",
]


def test_the_public_facade_keeps_its_names():
    import registry

    assert sorted(registry.__all__) == sorted(FACADE)
    assert [n for n in FACADE if getattr(registry, n, None) is None] == []


# What trace, impact, the status and the reading verbs return: a typed result, never a bare dict.
TYPED = {
    "registry.lineage.trace": ["trace_run", "trace_model"],
    "registry.lineage.image": ["trace_image", "trace_credentials"],
    "registry.lineage.impact": ["impact"],
    "registry.lineage.common": ["release_info", "sample_stats"],
    "registry.lineage.working": ["entry", "working_manifests"],
    "registry.trust.withdrawals": ["is_withdrawn"],
    "registry.trust.admission": ["admission"],
    "registry.releases.withdraw": ["withdraw"],
    "registry.releases.catalog": ["diff", "release_status", "list_status"],
    "registry.releases.verify": ["verify"],
    "registry.downstream.model_index": ["list_models"],
    "registry.store.marking": ["trace_marking"],
}


def _dict_of_str_keys_holding_results(annotation: object) -> bool:
    """A ``dict[str, ...]`` is fine when it maps names to typed results (``sample_stats``); a bare ``dict``
    or ``dict[str, Any]`` is what the rule forbids."""
    import typing

    origin = typing.get_origin(annotation)
    if origin is dict:
        _, value = typing.get_args(annotation)
        return value is not typing.Any and typing.get_origin(value) is not dict and value is not dict
    return True


@pytest.mark.parametrize(("module", "names"), sorted(TYPED.items()))
def test_results_are_typed_not_dicts(module: str, names: list[str]) -> None:
    import typing

    mod = importlib.import_module(module)
    for name in names:
        returned = typing.get_type_hints(getattr(mod, name))["return"]
        parts = [returned, *typing.get_args(returned)]  # X | None, tuple[X, Y]
        for part in parts:
            assert part is not dict, f"{module}.{name} returns a bare dict"
            if typing.get_origin(part) in (list, tuple):
                parts += [a for a in typing.get_args(part) if a is not Ellipsis]
            assert _dict_of_str_keys_holding_results(part), f"{module}.{name} returns {part}"


def test_the_release_status_is_an_enum() -> None:
    import typing
    from enum import Enum

    from registry.releases.catalog import StatusLine
    from registry.trust.admission import ReleaseStatus

    assert issubclass(ReleaseStatus, Enum)
    assert typing.get_type_hints(StatusLine)["state"] is ReleaseStatus
