"""The package layout keeps its promise: imports only point down, and no module circle.

Every module of ``deepr_neuro`` is parsed with :mod:`ast` (nothing is
imported); every import is collected: module level, inside functions and
classes, under ``if``/``try`` (``TYPE_CHECKING`` included), relative imports,
and ``importlib.import_module("deepr_neuro...")`` with a constant name. Each
module is mapped to its layer (ARCHITECTURE.md):

    0 errors (and the package root)   1 network    2 hardware   3 store
    4 training   5 simulate   6 convert   7 experiments   8 pipeline, cli

A module may import its own layer or a lower one; the module graph has no
cycle. Today's known violations are listed in ``KNOWN_VIOLATIONS`` with the
reason and the helper who removes them; an entry that is no longer a
violation fails the test too, so the list only shrinks.
"""
from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "deepr_neuro"

#: Layer of each top-level part of the package (ARCHITECTURE.md).
LAYERS: Dict[str, int] = {
    "errors": 0, "network": 1, "hardware": 2, "store": 3, "training": 4,
    "simulate": 5, "convert": 6, "interop": 6, "estimate": 7, "experiments": 7,
    "pipeline": 8, "interop_pipeline": 8, "cli": 8,
}
LAYER_NAMES = {0: "errors", 1: "network", 2: "hardware", 3: "store", 4: "training",
               5: "simulate", 6: "convert/interop", 7: "estimate/experiments", 8: "pipeline/cli"}

#: (importer, imported) -> why it is tolerated today and who removes it.
#: The lead empties this as the wave's work lands; do not add to it.
KNOWN_VIOLATIONS: Dict[Tuple[str, str], str] = {
}

#: The pure-NumPy rewiring core: neither it nor anything it imports may pull in a simulator.
REWIRING_CORE = ("deepr_neuro.training.rewiring", "deepr_neuro.training.deepr")
SIMULATORS = ("lava", "brian2")


# --------------------------------------------------------------------------- the checker
def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    """Layer of a ``deepr_neuro`` module; the package root sits with errors (it only re-exports it)."""
    parts = module.split(".")
    if parts == [PACKAGE]:
        return 0
    if parts[1] not in LAYERS:
        raise AssertionError(
            f"{module}: not in any layer; add its package to LAYERS here and to ARCHITECTURE.md")
    return LAYERS[parts[1]]


def imports_of(source: str, module: str, is_package: bool,
               known: Set[str]) -> Iterator[Tuple[int, str]]:
    """(line, imported module) for every import anywhere in ``source``: package
    modules by their full name (``from m import x`` gives ``m.x`` when that is a
    module, else ``m``), others by their top-level name."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        targets: List[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = module.split(".") if is_package else module.split(".")[:-1]
                base_parts = base_parts[:len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        elif isinstance(node, ast.Call):
            func = node.func
            fname = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if fname in ("import_module", "__import__") and node.args \
                    and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                targets = [node.args[0].value]
        for t in targets:
            if t == PACKAGE or t.startswith(PACKAGE + "."):
                yield node.lineno, t
            elif t:
                yield node.lineno, t.split(".")[0]


def import_graph(root: Path) -> Tuple[Dict[str, Set[str]], Dict[str, Set[str]], Dict[Tuple[str, str], int]]:
    """(internal edges, external top-level imports, line of each internal edge) of the package under ``root``."""
    files = {module_name(p, root): p for p in sorted((root / PACKAGE).rglob("*.py"))}
    known = set(files)
    internal: Dict[str, Set[str]] = {m: set() for m in files}
    external: Dict[str, Set[str]] = {m: set() for m in files}
    lines: Dict[Tuple[str, str], int] = {}
    for mod, path in files.items():
        for line, target in imports_of(path.read_text(encoding="utf-8"), mod,
                                       path.name == "__init__.py", known):
            if target in known:
                if target != mod:
                    internal[mod].add(target)
                    lines.setdefault((mod, target), line)
            elif target.split(".")[0] != PACKAGE:
                external[mod].add(target)
            else:
                raise AssertionError(f"{path}:{line}: imports {target}, which is no module of the package")
    return internal, external, lines


def upward_imports(internal: Dict[str, Set[str]]) -> List[Tuple[str, str]]:
    return sorted((a, b) for a, targets in internal.items() for b in targets
                  if layer_of(b) > layer_of(a))


def find_cycle(internal: Dict[str, Set[str]]) -> Optional[List[str]]:
    """One import cycle as [m0, m1, ..., m0], or None (iterative DFS)."""
    state: Dict[str, int] = {}
    for start in sorted(internal):
        if state.get(start):
            continue
        stack = [(start, iter(sorted(internal[start])))]
        path = [start]
        state[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                stack.append((nxt, iter(sorted(internal.get(nxt, ())))))
                path.append(nxt)
    return None


def closure(internal: Dict[str, Set[str]], starts) -> Set[str]:
    seen, todo = set(), list(starts)
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(internal.get(m, ()))
    return seen


def without_known(internal: Dict[str, Set[str]]) -> Dict[str, Set[str]]:
    return {a: {b for b in bs if (a, b) not in KNOWN_VIOLATIONS} for a, bs in internal.items()}


@pytest.fixture(scope="module")
def graph():
    return import_graph(ROOT)


# --------------------------------------------------------------------------- the package
def test_every_module_has_a_layer(graph):
    internal, _, _ = graph
    assert len(internal) > 30  # the walk found the package
    for m in internal:
        layer_of(m)


def test_imports_point_down(graph):
    internal, _, lines = graph
    bad = [f"{a} (layer {layer_of(a)} {LAYER_NAMES[layer_of(a)]}) imports {b} (layer {layer_of(b)} "
           f"{LAYER_NAMES[layer_of(b)]}) at line {lines[(a, b)]}"
           for a, b in upward_imports(internal) if (a, b) not in KNOWN_VIOLATIONS]
    assert not bad, ("imports that point up (ARCHITECTURE.md: a module imports its own layer or below; "
                     "move the shared part down instead):\n" + "\n".join(bad))


def test_module_graph_has_no_cycle(graph):
    internal, _, _ = graph
    cycle = find_cycle(without_known(internal))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_known_violations_are_still_violations(graph):
    """A fixed violation must leave the list (so the list only shrinks)."""
    internal, _, _ = graph
    upward = set(upward_imports(internal))
    for (a, b), reason in KNOWN_VIOLATIONS.items():
        assert b in internal.get(a, ()), f"{a} no longer imports {b}: remove it from KNOWN_VIOLATIONS"
        if (a, b) not in upward:  # a same-layer entry is tolerated only as part of a circle
            rest = without_known(internal)
            assert a in closure(rest, [b]), (
                f"{a} -> {b} is neither upward nor part of a circle any more: remove it from "
                f"KNOWN_VIOLATIONS ({reason})")


def test_rewiring_core_never_reaches_a_simulator(graph):
    internal, external, _ = graph
    reach = closure(without_known(internal), REWIRING_CORE)
    for m in sorted(reach):
        hit = external[m] & set(SIMULATORS)
        assert not hit, f"{m} (imported by the rewiring core) imports {sorted(hit)}"


def test_rewiring_core_imports_no_simulator_at_run_time():
    """The same, measured: importing the core loads no Lava or Brian2 module."""
    code = ("import sys, deepr_neuro.training.rewiring, deepr_neuro.training.deepr\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lava', 'brian2')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_training_imports_no_simulate_or_convert_module(graph):
    internal, _, lines = graph
    bad = [f"{a} imports {b} (line {lines[(a, b)]})"
           for a, bs in sorted(internal.items()) if a.startswith(f"{PACKAGE}.training")
           for b in sorted(bs)
           if b.split(".")[1:2] in (["simulate"], ["convert"]) and (a, b) not in KNOWN_VIOLATIONS]
    assert not bad, "\n".join(bad)


def test_architecture_md_names_every_layer():
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    for part in LAYERS:
        assert f"{part}" in text, f"ARCHITECTURE.md does not mention {part}"


# --------------------------------------------------------------------------- the checker itself
def _fake_package(tmp_path: Path, files: Dict[str, str]) -> Path:
    for rel, src in files.items():
        p = tmp_path / PACKAGE / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(src))
    for d in {p.parent for p in (tmp_path / PACKAGE).rglob("*.py")}:
        (d / "__init__.py").touch()
    return tmp_path


BASE = {"errors.py": "", "network/integer_network.py": "", "hardware/profile.py": "",
        "store/bundle.py": "", "training/trainer.py": "", "simulate/emulator.py": "",
        "convert/conversion.py": "", "experiments/sweep.py": "", "cli.py": ""}

UPWARD = {
    "module level": ("store/bundle.py", "from deepr_neuro.experiments.sweep import x\n"),
    "inside a function": ("store/bundle.py", "def f():\n    from deepr_neuro.experiments import sweep\n"),
    "inside a method": ("hardware/profile.py",
                        "class A:\n    def f(self):\n        import deepr_neuro.convert.conversion\n"),
    "under TYPE_CHECKING": ("network/integer_network.py",
                            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                            "    from deepr_neuro.hardware.profile import P\n"),
    "in a try block": ("errors.py", "try:\n    import deepr_neuro.cli as c\nexcept ImportError:\n    pass\n"),
    "relative": ("training/trainer.py", "from ..simulate import emulator\n"),
    "relative, two levels": ("training/trainer.py", "from ..convert.conversion import convert\n"),
    "importlib": ("store/bundle.py", "import importlib\nm = importlib.import_module('deepr_neuro.cli')\n"),
    "package attribute": ("hardware/profile.py", "from deepr_neuro import store\n"),
}


@pytest.mark.parametrize("case", sorted(UPWARD))
def test_checker_finds_an_upward_import(tmp_path, case):
    rel, src = UPWARD[case]
    root = _fake_package(tmp_path, {**BASE, rel: src})
    internal, _, _ = import_graph(root)
    assert len(upward_imports(internal)) == 1, upward_imports(internal)


DOWNWARD = {
    "same layer": ("convert/conversion.py", "from deepr_neuro.convert import quantize\n"),
    "lower layer": ("cli.py", "from deepr_neuro.errors import DeeprError\nimport deepr_neuro.store.bundle\n"),
    "relative sibling": ("experiments/sweep.py", "from . import summary\nfrom .. import errors\n"),
    "external only": ("training/trainer.py", "import numpy\nfrom scipy import sparse\n"),
}


@pytest.mark.parametrize("case", sorted(DOWNWARD))
def test_checker_accepts_a_downward_import(tmp_path, case):
    rel, src = DOWNWARD[case]
    files = {**BASE, "convert/quantize.py": "", "experiments/summary.py": "", rel: src}
    internal, _, _ = import_graph(_fake_package(tmp_path, files))
    assert upward_imports(internal) == []
    assert find_cycle(internal) is None


@pytest.mark.parametrize("length", [2, 3, 5])
def test_checker_finds_a_same_layer_cycle(tmp_path, length):
    names = [f"m{i}" for i in range(length)]
    files = {f"simulate/{n}.py": f"def f():\n    from deepr_neuro.simulate import {names[(i + 1) % length]}\n"
             for i, n in enumerate(names)}
    internal, _, _ = import_graph(_fake_package(tmp_path, {**BASE, **files}))
    cycle = find_cycle(internal)
    assert cycle is not None and cycle[0] == cycle[-1] and len(cycle) == length + 1
    assert upward_imports(internal) == []


def test_checker_reports_a_simulator_reached_through_a_helper(tmp_path):
    files = {**BASE, "training/rewiring.py": "from deepr_neuro.training import helper\n",
             "training/deepr.py": "", "training/helper.py": "def f():\n    import brian2\n"}
    internal, external, _ = import_graph(_fake_package(tmp_path, files))
    reach = closure(internal, REWIRING_CORE)
    assert "deepr_neuro.training.helper" in reach and "brian2" in external["deepr_neuro.training.helper"]


def test_checker_refuses_a_module_outside_every_layer(tmp_path):
    internal, _, _ = import_graph(_fake_package(tmp_path, {**BASE, "gadgets/x.py": ""}))
    with pytest.raises(AssertionError, match="not in any layer"):
        for m in internal:
            layer_of(m)


def test_checker_refuses_an_import_of_a_missing_module(tmp_path):
    with pytest.raises(AssertionError, match="no module of the package"):
        import_graph(_fake_package(tmp_path, {**BASE, "cli.py": "import deepr_neuro_extra\nimport deepr_neuro.nothing\n"}))
