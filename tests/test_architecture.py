"""The package's shape, checked: dependencies run one way (from the CLI down to chat and the spec), no import
cycles, no module reaching into another's private names, and the evaluation independent of every training signal.

Imports are read from the source (module level and inside functions alike: a lazy import is still a dependency).
docs/design.md draws the same layers.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "chatforge"

# Each top-level unit's layer: a unit may import units of lower layers (and itself), never higher or sideways.
LAYERS = {
    "atomic": 0, "quiet": 0, "chat": 0, "spec": 0,
    "models": 1,
    "data": 2, "store": 2, "decoder": 2,
    "generation": 3,
    "sampling": 4, "raters": 4, "terminal": 4, "llamacpp": 4,
    "train": 5, "redteam": 5, "serve": 5, "evaluate": 5, "recipe": 5, "gguf_export": 5,
    "report": 6,
    "pipeline": 7,
    "cli": 8,
}
# Sideways imports that are part of the design (a moderation backend of the server is the red-team safety judge).
ALLOWED_SIDEWAYS = {("serve", "redteam")}
# What the evaluation may never read: the training signals and the rules they score by.
EVALUATION_MUST_NOT_IMPORT = ("chatforge.train", "chatforge.raters", "chatforge.redteam", "chatforge.serve",
                              "chatforge.spec", "chatforge.sampling", "chatforge.pipeline")
TRAINING_SIDE = ("train", "raters", "redteam", "serve", "sampling", "spec", "data", "generation")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[str, int, list[str]]]:
    """(imported module, line, names imported from it) for every chatforge import in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno, []) for a in node.names if a.name.startswith("chatforge")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            if base.startswith("chatforge"):
                folder = PACKAGE.parent / Path(*base.split("."))
                for name in (a.name for a in node.names):
                    # `from chatforge.train import sft` imports the submodule chatforge.train.sft
                    if (folder / name).is_dir() or (folder / f"{name}.py").is_file():
                        out.append((f"{base}.{name}", node.lineno, []))
                    else:
                        out.append((base, node.lineno, [name]))
    return out


def all_imports() -> dict[str, list[tuple[str, int, list[str]]]]:
    return {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_unit_has_a_layer():
    units = {unit(m) for m in all_imports()} - {""}
    assert units <= set(LAYERS), f"give these a layer in LAYERS (and docs/design.md): {sorted(units - set(LAYERS))}"


def test_dependencies_run_one_way():
    problems = []
    for module, imports in all_imports().items():
        mine = unit(module)
        for target, line, _ in imports:
            theirs = unit(target)
            if not mine or not theirs or mine == theirs:
                continue
            if LAYERS[theirs] > LAYERS[mine] or (LAYERS[theirs] == LAYERS[mine] and (mine, theirs) not in ALLOWED_SIDEWAYS):
                problems.append(f"{module}:{line} imports {target} ({mine} is layer {LAYERS[mine]}, {theirs} is {LAYERS[theirs]})")
    assert not problems, "imports against the layers:\n" + "\n".join(problems)


def test_no_import_cycles_between_modules():
    graph: dict[str, set[str]] = {}
    modules = set(all_imports())
    for module, imports in all_imports().items():
        graph[module] = {t for t, _, _ in imports if t in modules and t != module}
    # Tarjan's strongly connected components
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
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
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_no_module_imports_another_modules_private_names():
    problems = []
    for module, imports in all_imports().items():
        for target, line, names in imports:
            if target == module:
                continue
            for name in names:
                if name.startswith("_") and not name.startswith("__"):
                    problems.append(f"{module}:{line} imports {name} from {target}")
    assert not problems, "\n".join(problems)


def test_evaluation_reads_no_training_signal_and_no_training_code_reads_it():
    problems = []
    for module, imports in all_imports().items():
        targets = [(t, line) for t, line, _ in imports]
        if unit(module) == "evaluate":
            problems += [f"{module}:{line} imports {t}" for t, line in targets if t.startswith(EVALUATION_MUST_NOT_IMPORT)]
        elif unit(module) in TRAINING_SIDE:
            problems += [f"{module}:{line} imports {t}" for t, line in targets if t.startswith("chatforge.evaluate")]
    assert not problems, "the evaluation must stay independent of training:\n" + "\n".join(problems)


@pytest.mark.parametrize("broken", ["upward", "evaluation"])
def test_the_checks_catch_a_violation(tmp_path, monkeypatch, broken):
    # A module that imports against the rules makes the checks fail (they are not vacuous).
    fake = {"upward": ("chatforge.chat", "chatforge.pipeline"), "evaluation": ("chatforge.raters.simulated", "chatforge.evaluate.judges")}[broken]
    real = all_imports()

    def with_violation() -> dict[str, list[tuple[str, int, list[str]]]]:
        out = dict(real)
        out[fake[0]] = [*out.get(fake[0], []), (fake[1], 1, [])]
        return out

    monkeypatch.setattr(sys.modules[__name__], "all_imports", with_violation)
    check = test_dependencies_run_one_way if broken == "upward" else test_evaluation_reads_no_training_signal_and_no_training_code_reads_it
    with pytest.raises(AssertionError):
        check()
