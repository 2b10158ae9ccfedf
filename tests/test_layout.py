"""The package layout as executable rules, checked on the source with ``ast`` (no package import, so it is fast).

Two tiers. The library: core (GridS, sampling, reducers, jax, viz and the shared ``_``-modules), adapters
(``patch/``), the FLOPs / latency tool (``flops/``: it places GridS in real VLAs through the adapters), environments
(``envs/``) and the policy (``policy/``: configuration, modeling, checkpoint). What runs experiments:
``experiments/`` and the root ``cli.py``. The rules:

1. a core module imports no adapter, tool, env, policy, experiments or CLI module; the tool (``flops/``) imports
   core and adapters only (no env, policy or experiments);
2. an env imports no policy or experiments module;
3. an adapter imports no other adapter (their shared code lives in ``patch/_common.py``);
4. nothing in the library imports ``experiments`` (only ``experiments/`` itself and the root ``cli.py`` do);
5. no module imports another module's private (``_name``) function, class or constant; the ``_``-modules themselves
   (``grids_vla._io``, ``_checks``, ``_cli_fields``, ``patch/_common``) are shared internals and may be imported.

Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "grids_vla"

# Old import paths that re-export names which moved to experiments/, for callers outside the package (benchmarks,
# tests). They are exempt from rules 1-4 but must stay thin; delete each once nothing imports it.
COMPAT_SHIMS = frozenset({"grids_vla.demo", "grids_vla.toy", "grids_vla.policy.training",
                          "grids_vla.policy.evaluation"})

# Violations in the current tree that are someone else's to fix: the test fails when a new one appears and when one
# of these is gone (then delete its line here).
KNOWN = frozenset({
    "grids_vla.envs.libero.data imports private grids_vla.envs.libero.generate._generate_one_task",
})


# --------------------------------------------------------------------------------------------------------- checker


def module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules(src: Path = SRC) -> dict[str, Path]:
    return {module_name(p, src): p for p in sorted((src / PACKAGE).rglob("*.py"))}


def tags(module: str) -> set[str]:
    """What a module is: core, adapter, tool, env, policy, experiments, and/or cli."""
    parts = module.split(".")
    found = {"cli"} if parts[-1] in ("cli", "_cli_fields") else set()
    area = parts[1] if len(parts) > 1 else ""
    found |= {"patch": {"adapter"}, "flops": {"tool"}, "envs": {"env"}, "policy": {"policy"},
              "experiments": {"experiments"}}.get(area, set())
    return found or {"core"}


def is_concrete_adapter(module: str) -> bool:
    """``patch/timm.py``, ``patch/hf_transformers.py``: not the package itself nor a shared ``_``-module."""
    parts = module.split(".")
    return "adapter" in tags(module) and len(parts) > 2 and not any(p.startswith("_") for p in parts[2:])


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _known_module(name: str, modules: set[str]) -> str:
    """The longest prefix of a dotted name that is a module of the package."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in modules:
            return ".".join(parts[:n])
    return name


def imports(module: str, tree: ast.AST, modules: set[str], is_package: bool) -> list[tuple[int, str, str | None]]:
    """``(line, imported module, imported attribute or None)`` for every import of a package module in ``tree``,
    plus ``alias._name`` uses of a module bound by an import (as attributes)."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str, str | None]] = []
    bound: dict[str, str] = {}  # local name -> module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    target = _known_module(alias.name, modules)
                    found.append((node.lineno, target, None))
                    if alias.asname:
                        bound[alias.asname] = target
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = ".".join(base[:len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                if f"{base}.{alias.name}" in modules:  # a submodule
                    found.append((node.lineno, f"{base}.{alias.name}", None))
                    bound[alias.asname or alias.name] = f"{base}.{alias.name}"
                elif alias.name != "*":
                    found.append((node.lineno, _known_module(base, modules), alias.name))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound:
            found.append((node.lineno, bound[node.value.id], node.attr))
    return found


def violations(module: str, source: str, modules: set[str], is_package: bool = False) -> list[str]:
    """The rules this module's source breaks, one line each (without line numbers, so they are stable)."""
    out = []
    mine = tags(module)
    for _, target, attr in imports(module, ast.parse(source), modules, is_package):
        theirs = tags(target)
        if attr is not None and _is_private(attr) and target != module:
            out.append(f"{module} imports private {target}.{attr}")
        if module in COMPAT_SHIMS or target == module:
            continue
        if "core" in mine and theirs & {"adapter", "tool", "env", "policy", "experiments", "cli"}:
            out.append(f"core module {module} imports {target} ({', '.join(sorted(theirs))})")
        if "tool" in mine and theirs & {"env", "policy", "experiments"}:
            out.append(f"tool module {module} imports {target} ({', '.join(sorted(theirs))})")
        if "env" in mine and theirs & {"policy", "experiments"}:
            out.append(f"env module {module} imports {target} ({', '.join(sorted(theirs))})")
        if is_concrete_adapter(module) and is_concrete_adapter(target):
            out.append(f"adapter {module} imports adapter {target}")
        if "experiments" not in mine and module != f"{PACKAGE}.cli" and "experiments" in theirs:
            out.append(f"library module {module} imports {target} (experiments)")
    return sorted(set(out))


def is_thin(source: str) -> bool:
    """A re-export module: a docstring saying where the names moved, imports, ``__all__`` and at most
    ``sys.modules[__name__] = module``."""
    body = ast.parse(source).body
    if not (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
            and str(body[0].value.value).startswith("Moved to")):
        return False
    for node in body[1:]:
        if isinstance(node, ast.Import | ast.ImportFrom):
            continue
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            t = node.targets[0]
            if isinstance(t, ast.Name) and t.id == "__all__":
                continue
            if (isinstance(t, ast.Subscript) and ast.unparse(t) == "sys.modules[__name__]"
                    and isinstance(node.value, ast.Name)):
                continue
        return False
    return True


# ---------------------------------------------------------------------------------------------------- the package


def tree_violations() -> set[str]:
    modules = package_modules()
    names = set(modules)
    return {v for m, p in modules.items() for v in violations(m, p.read_text(), names, p.name == "__init__.py")}


def test_the_package_keeps_the_rules() -> None:
    modules = package_modules()
    assert {"grids_vla.grids", "grids_vla.patch.timm", "grids_vla.envs.libero.env", "grids_vla.policy.checkpoint",
            "grids_vla.experiments.train", "grids_vla.cli"} <= set(modules)  # the scan sees the package
    found = tree_violations()
    assert sorted(found - KNOWN) == [], "new layout violations"
    assert sorted(KNOWN - found) == [], "fixed: delete these from KNOWN"


def test_compat_shims_are_thin_and_exist() -> None:
    modules = package_modules()
    for name in sorted(COMPAT_SHIMS):
        assert name in modules, f"{name} is gone: delete it from COMPAT_SHIMS"
        assert is_thin(modules[name].read_text()), f"{name} must only re-export (see is_thin)"


def test_command_modules_live_in_experiments_or_are_library_clis() -> None:
    tree = ast.parse((SRC / PACKAGE / "cli.py").read_text())
    listed = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                  and getattr(n.targets[0], "id", "") == "COMMAND_MODULES")
    modules = package_modules()
    for name in listed:
        assert name in modules and name not in COMPAT_SHIMS, name
        assert tags(name) & {"experiments", "cli"}, f"{name} adds commands but is neither experiments nor a CLI"


# ----------------------------------------------------------------------------------------- the checker itself

MODULES = {"grids_vla", "grids_vla.grids", "grids_vla._io", "grids_vla._cli_fields", "grids_vla.cli",
           "grids_vla.patch", "grids_vla.patch._common", "grids_vla.patch.timm", "grids_vla.patch.hf_transformers",
           "grids_vla.envs", "grids_vla.envs.libero", "grids_vla.envs.libero.env", "grids_vla.envs.libero.cli",
           "grids_vla.policy", "grids_vla.policy.modeling_grids_vla", "grids_vla.experiments",
           "grids_vla.experiments.train", "grids_vla.flops", "grids_vla.flops.cli", "grids_vla.flops.counter",
           "grids_vla.demo"}


def check(module: str, source: str) -> list[str]:
    return violations(module, source, MODULES, is_package=module in {"grids_vla", "grids_vla.patch"})


@pytest.mark.parametrize("source, kind", [
    ("from .patch import timm", "adapter"),
    ("import grids_vla.patch.timm", "adapter"),
    ("from .envs.libero.env import make_env", "env"),
    ("def f():\n    from .policy.modeling_grids_vla import GridSVLAPolicy", "policy"),
    ("from .experiments import train", "experiments"),
    ("from ._cli_fields import add_dataclass_fields", "cli"),
    ("from .flops.cli import add_commands", "cli"),
    ("from .flops.counter import model_flops", "tool"),
])
def test_rule_core_imports_nothing_above_it(source: str, kind: str) -> None:
    found = check("grids_vla.grids", source)
    assert any(f.startswith("core module grids_vla.grids imports") and kind in f.rpartition("(")[2] for f in found), \
        found
    assert check("grids_vla.flops.counter", "from ..grids import GridSampler\nfrom .._io import atomic_path") == []


def test_rule_the_tool_builds_on_core_and_adapters_only() -> None:
    assert check("grids_vla.flops.counter", "from ..patch import timm\nfrom ..grids import GridSampler") == []
    assert check("grids_vla.flops.counter", "from ..policy import GridSVLAPolicy") == [
        "tool module grids_vla.flops.counter imports grids_vla.policy (policy)"]
    assert check("grids_vla.flops.counter", "from ..envs.libero.env import make_env") == [
        "tool module grids_vla.flops.counter imports grids_vla.envs.libero.env (env)"]


def test_rule_env_imports_no_policy_or_experiments() -> None:
    assert check("grids_vla.envs.libero.env", "from ...policy import GridSVLAPolicy") == [
        "env module grids_vla.envs.libero.env imports grids_vla.policy (policy)"]
    assert check("grids_vla.envs.libero.cli", "import grids_vla.experiments.train") == [
        "env module grids_vla.envs.libero.cli imports grids_vla.experiments.train (experiments)",
        "library module grids_vla.envs.libero.cli imports grids_vla.experiments.train (experiments)"]
    assert check("grids_vla.envs.libero.env", "from ...grids import GridSampler") == []


def test_rule_adapters_are_independent() -> None:
    assert check("grids_vla.patch.timm", "from .hf_transformers import patch_transformers") == [
        "adapter grids_vla.patch.timm imports adapter grids_vla.patch.hf_transformers"]
    assert check("grids_vla.patch.timm", "from ._common import get_adapter\nfrom ..grids import GridSampler") == []
    assert check("grids_vla.patch", "from .timm import patch_timm\nfrom .hf_transformers import x") == []


def test_rule_only_experiments_and_the_root_cli_import_experiments() -> None:
    src = "from ..experiments.train import train"
    assert check("grids_vla.policy.modeling_grids_vla", src) == [
        "library module grids_vla.policy.modeling_grids_vla imports grids_vla.experiments.train (experiments)"]
    assert check("grids_vla.flops.cli", "from ..experiments import train") == [
        "library module grids_vla.flops.cli imports grids_vla.experiments.train (experiments)",
        "tool module grids_vla.flops.cli imports grids_vla.experiments.train (experiments)"]
    assert check("grids_vla.experiments.train", "from . import train\nfrom ..policy import x") == []
    assert check("grids_vla.cli", "import grids_vla.experiments.train") == []
    assert check("grids_vla.demo", "from .experiments import train") == []  # a listed compat shim


def test_rule_no_private_names_across_modules() -> None:
    assert check("grids_vla.experiments.train", "from ..patch._common import _helper") == [
        "grids_vla.experiments.train imports private grids_vla.patch._common._helper"]
    assert check("grids_vla.experiments.train", "import grids_vla.flops.counter as c\nc._table(1)") == [
        "grids_vla.experiments.train imports private grids_vla.flops.counter._table"]
    assert check("grids_vla.experiments.train", "from ..flops import counter\ncounter._table") == [
        "grids_vla.experiments.train imports private grids_vla.flops.counter._table"]
    # shared _-modules, public names, dunders and a module's own names are fine
    assert check("grids_vla.experiments.train", "from .. import _io\nfrom .._io import atomic_path\n"
                 "from ..patch import _common\nfrom ..grids import __doc__") == []
    assert check("grids_vla.patch.timm", "from ._common import get_adapter") == []


def test_thin_shim_check() -> None:
    assert is_thin('"""Moved to x."""\n\nimport sys\n\nfrom .experiments import toy\n\nsys.modules[__name__] = toy\n')
    assert is_thin('"""Moved to x."""\nfrom .a import b\n__all__ = ["b"]\n')
    assert not is_thin('"""Moved to x."""\nfrom .a import b\n\ndef c():\n    return b\n')
    assert not is_thin('"""Training loop."""\nfrom .a import b\n')
    assert not is_thin('from .a import b\n')
