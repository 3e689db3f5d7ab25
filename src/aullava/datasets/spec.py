"""Dataset specs as users write them (`aullava eval --data`, a recipe's `data.train`): read strictly, so a typo
is an error naming the key and the closest valid one instead of a reader silently using its default; and what was
dropped on the way from a table to samples, said in one line."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable

import yaml

SPLIT_KEYS = ("type", "fold", "split", "fold_seed")


def closest_hint(name: str, valid) -> str:
    import difflib

    match = difflib.get_close_matches(str(name), [str(v) for v in valid], n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def training_repeat(value: Any, where: str) -> int:
    """A dataset spec's `repeat` (how many times it enters the training mix), checked: a whole number ≥ 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where}: repeat must be a whole number ≥ 1 (times the dataset enters the training mix), "
                         f"got {value!r}")
    return value


def reader_keys(reader: Callable, skip: tuple[str, ...] = ()) -> list[str]:
    params = inspect.signature(reader).parameters.values()
    return [p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name not in skip]


def check_keys(spec: dict[str, Any], valid: list[str], where: str, kind: str) -> None:
    for key in spec:
        if key not in valid:
            raise ValueError(f"{where}: unknown key {key!r} in the {kind} dataset spec{closest_hint(key, valid)}; "
                             f"valid keys: {', '.join(valid)}")


def load_eval_spec(path: str | Path) -> dict[str, Any]:
    """`--data` YAML → one dataset spec: a spec, a one-item list, or a training recipe (its data.eval, else
    data.train). A `repeat` (a weight in the training mix) is checked and dropped: evaluation reads every frame
    once."""
    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "syntax error"
        raise ValueError(f"{path}: not valid YAML ({problem}{where})") from None
    if spec is None:
        raise ValueError(f"{path}: empty; expected a dataset spec such as {{type: manifest, path: labels.csv}}")
    recipe = isinstance(spec, dict) and "data" in spec
    if recipe:  # a training recipe: evaluate its eval (or train) data (its paths, like `train`'s, from here)
        data = spec["data"]
        if not isinstance(data, dict) or not (data.get("eval") or data.get("train")):
            raise ValueError(f"{path}: a recipe whose data section has neither eval nor train")
        spec = data.get("eval") or data["train"]
    if isinstance(spec, list):
        if len(spec) != 1:
            raise ValueError(f"{path}: evaluate one dataset at a time (found {len(spec)})")
        spec = spec[0]
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: expected a dataset spec (a mapping with a type), found {type(spec).__name__}")
    spec = dict(spec)
    training_repeat(spec.pop("repeat", 1), str(path))  # a training-mix weight: evaluation reads every frame once
    return spec if recipe else resolve_spec_paths(spec, path.parent)


PATH_KEYS = ("path", "root", "frames_root", "images_root")


def resolve_spec_paths(spec: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A relative path in a spec file means a path beside the spec file; one that only exists relative to the
    working folder (how specs written before 2026-12-05 were read) is still taken from there."""
    spec = dict(spec)
    for key in PATH_KEYS:
        value = spec.get(key)
        if not isinstance(value, str) or not value or Path(value).is_absolute():
            continue
        beside = folder / value
        if beside.exists() or not Path(value).exists():
            spec[key] = str(beside)
    return spec


def dropped_summary(total: int, failures: list, what: str = "dropped", first: int = 3) -> str:
    """'12 of 500 frames not evaluated (no face found: 9, file not found: 3); first: a.jpg: no face found, …'."""
    reasons: dict[str, int] = {}
    for failure in failures:
        reason = getattr(failure, "reason", str(failure))
        reasons[reason] = reasons.get(reason, 0) + 1
    counts = ", ".join(f"{reason}: {n}" for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:4])
    examples = "; ".join(str(f) for f in failures[:first])
    return f"{len(failures)} of {total} frames {what} ({counts}); first: {examples}"
