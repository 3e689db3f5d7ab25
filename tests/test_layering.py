"""The package's structure stays true: imports only go down (read from the source with ast, so a lazy import
inside a function counts too), and no two subpackages import each other."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import aullava

ROOT = Path(aullava.__file__).parent

ALL_PARTS = {"aus", "runtime", "faces", "model", "datasets", "synth", "teacher", "training", "eval", "inference",
             "tables", "pictures", "serve", "cli", "llava"}
# part → parts it must never import (the data flows image → face → tokens → LLM → answer → table). The model reads
# the face's own definitions (faces.geometry_features: the geometry vector its optional stream takes).
FORBIDDEN = {
    "model": {"training", "eval", "synth", "teacher", "cli", "inference", "datasets", "llava", "serve", "pictures",
              "tables"},
    "faces": {"model", "training", "eval", "synth", "teacher", "cli", "inference", "datasets", "serve", "pictures",
              "tables"},  # faces.video_frames (PyAV decoding) and faces.tracking (face ids) included
    "datasets": {"model", "training", "eval", "synth", "teacher", "cli", "inference", "serve", "pictures"},
    "synth": {"model", "training", "eval", "teacher", "cli", "inference", "datasets", "serve", "pictures"},
    "teacher": {"model", "training", "cli", "inference", "datasets", "serve", "pictures"},
    "training": {"eval", "synth", "teacher", "cli", "inference", "serve", "pictures"},
    "eval": {"training", "synth", "cli", "serve"},
    "inference": {"training", "eval", "synth", "teacher", "cli", "serve"},
    # the shared vocabulary and the machine: below every other part, importing none of them
    "aus": ALL_PARTS - {"aus"},
    "runtime": ALL_PARTS - {"runtime"},
    "pictures": {"training", "synth", "teacher", "cli", "serve"},  # reads tables and results, draws them
    "tables": {"model", "training", "eval", "synth", "teacher", "cli", "inference", "datasets", "llava", "serve",
               "pictures"},  # the predict table's columns and its streaming writer: below inference
    "serve": {"cli", "training", "synth", "teacher"},  # on top, beside the command line
}


def _part(module: str) -> str:
    """`aullava.model.modeling` → 'model'; `aullava.cli.predict` → 'cli'; a loose `aullava.cli_*` module, should one
    come back, counts as the command line too."""
    part = module.split(".")[1] if module.count(".") >= 1 else module
    return "cli" if part.startswith("cli") else part


def _imports() -> dict[str, set[str]]:
    """Module → the aullava modules it imports (absolute names)."""
    found: dict[str, set[str]] = defaultdict(set)
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        package = module if rel.name == "__init__" else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
                names = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            found[module].update(n for n in names if n == "aullava" or n.startswith("aullava."))
    return found


def test_every_module_belongs_to_a_part():
    """No loose module beside the folders: each one is a part of the drawing (docs/architecture.md)."""
    loose = sorted(p.name for p in ROOT.glob("*.py") if p.name not in {"__init__.py", "__main__.py"})
    assert not loose, f"modules outside every part: {loose}"
    parts = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert parts == ALL_PARTS, f"parts without layering rules: {sorted(parts - ALL_PARTS)}"


def test_imports_only_go_down():
    problems = []
    for module, targets in _imports().items():
        for target in targets:
            if target.count(".") and _part(target) in FORBIDDEN.get(_part(module), set()):
                problems.append(f"{module} imports {target}")
    assert not problems, "\n".join(sorted(problems))


def test_no_import_cycle_between_parts():
    graph: dict[str, set[str]] = defaultdict(set)
    for module, targets in _imports().items():
        for target in targets:
            if target.count(".") and _part(target) != _part(module):
                graph[_part(module)].add(_part(target))
    cycles = [(a, b) for a in graph for b in graph[a] if a in graph.get(b, set()) and a < b]
    assert not cycles, f"parts importing each other: {cycles}"


def test_no_private_name_is_imported_across_modules():
    problems = []
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("aullava")):
                problems += [f"{path.relative_to(ROOT)}: {alias.name}" for alias in node.names
                             if alias.name.startswith("_") and alias.name != "__future__"]
    assert not problems, "\n".join(problems)


def test_the_layering_test_sees_the_imports():
    imports = _imports()
    assert "aullava.model.modeling" in imports["aullava.inference.predictor"]
    assert any(t.startswith("aullava.model") for t in imports["aullava.training.recipe"])


def test_top_level_exports_are_lazy():
    import subprocess
    import sys

    code = ("import sys, aullava; assert 'torch' not in sys.modules, 'import aullava loaded torch'; "
            "from aullava import AuLlavaConfig, AuLlavaModel, AuLlavaProcessor, Predictor; "
            "assert AuLlavaConfig().lora.r == 16 and Predictor.__module__ == 'aullava.inference.predictor'")
    subprocess.run([sys.executable, "-c", code], check=True)
