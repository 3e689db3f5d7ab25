"""Tiny random models, smooth random face crops and the parallel-equals-sequential check, for the decoder tests of
several parts (model, faces, inference)."""

from __future__ import annotations

import torch

from conftest import tiny_model_config

from aullava.aus.answer_format import ALL_FORMATS
from aullava.model.decoding import generate_answers
from aullava.model.decoding.parallel import ParallelDecoder


def tiny_model(tokenizer_dir, au_set, seed: int, llm: str = "gemma3_text", vision: str = "clip",
               geometry: dict | None = None):
    from aullava.model.modeling import AuLlavaModel

    torch.manual_seed(seed)
    config = tiny_model_config(tokenizer_dir, au_set=au_set, llm=llm, vision=vision)
    if geometry is not None:
        config.geometry = geometry
    model = AuLlavaModel(config).eval()
    with torch.no_grad():  # larger random weights: answers whose values differ more within and across faces
        for name, param in model.language_model.named_parameters():
            if param.dim() == 2 and "embed" not in name:
                param.normal_(0, 8 / param.shape[1] ** 0.5)
    return model


def random_crops(n: int, seed: int, size: int = 32) -> torch.Tensor:
    """Smooth random images (blobs, not noise: noise images all look alike to an encoder)."""
    coarse = torch.rand((n, 3, 4, 4), generator=torch.Generator().manual_seed(seed))
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return (smooth * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def compare(model, crops, formats=ALL_FORMATS, geometry=None):
    decoder = ParallelDecoder(model)
    readouts = decoder.decode(crops, formats, geometry=geometry)
    texts = {}
    for fmt in formats:
        sequential = generate_answers(model, crops, [fmt] * len(crops), geometry=geometry)
        parallel = [r[fmt].text for r in readouts]
        mismatches = [(i, s, p) for i, (s, p) in enumerate(zip(sequential, parallel)) if s != p]
        assert not mismatches, f"{fmt.value}: {len(mismatches)} answers differ, first {mismatches[0]}"
        texts[fmt] = parallel
    return decoder, readouts, texts
