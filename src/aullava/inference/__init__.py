"""Prediction: files, folders and arrays → faces → answers → typed results and the table (`predictor`:
`Predictor`), and the same split over several processes (`shards`). The names below load on first use, so the
command line's `merge-shards` does not load torch."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {name: "aullava.inference.predictor" for name in
            ("Predictor", "FaceResult", "ImageResult", "default_model_dir", "load_model", "to_dataframe")}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'aullava.inference' has no attribute {name!r}")
