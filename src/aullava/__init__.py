"""aullava: facial Action Unit recognition with an LLM (AU-LLaVA). The main entry points, imported on first use
so that `import aullava` stays cheap (torch and transformers load only when a model is needed):

    from aullava import Predictor                 # files/folders/arrays → typed results and tables
    from aullava import AuLlavaModel, AuLlavaConfig, AuLlavaProcessor
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Predictor": "aullava.inference.predictor",
    "AuLlavaModel": "aullava.model.modeling",
    "AuLlavaConfig": "aullava.model.config",
    "AuLlavaProcessor": "aullava.model.processing",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'aullava' has no attribute {name!r}")
