"""The run record beside a `predict` table (`<table>.run.json`): what makes two runs' rows belong in one table, so
`predict --resume` refuses to append rows of another model or other options."""

from __future__ import annotations

from pathlib import Path


def run_record_path(out: Path) -> Path:
    """Where a table's run record lives: beside it, `<table>.run.json`."""
    return out.with_name(out.name + ".run.json")


def run_identity(args, formats, model_dir: Path | None, config) -> dict:
    """What makes two runs' rows belong in one table: the model (its folder and the hash of its config.json and
    weights' sizes), formats, readout options and frame sampling."""
    import hashlib

    digest = None
    if model_dir is not None:
        h = hashlib.sha256((model_dir / "config.json").read_bytes())
        for weights in sorted(model_dir.glob("*.safetensors")):
            h.update(f"{weights.name}:{weights.stat().st_size}".encode())
        digest = h.hexdigest()[:16]
    return {"model": str(model_dir.resolve()) if model_dir else None, "model_hash": digest,
            "template": getattr(config, "template_version", None), "formats": [str(f) for f in formats],
            "intensity": args.intensity, "precision": args.precision, "readout": args.readout,
            "every": args.every, "fps": args.fps, "start": args.start, "end": args.end,
            "blendshapes": bool(args.blendshapes), "landmarks": bool(args.landmarks)}


def write_run_record(args, formats, out: Path, model) -> None:
    import json

    from aullava.runtime.files import atomic_write
    from aullava.inference import default_model_dir

    model_dir = Path(args.model) if args.model else default_model_dir()
    identity = run_identity(args, formats, model_dir, model.config)
    atomic_write(run_record_path(out), (json.dumps(identity, indent=1) + "\n").encode())
