"""Which arithmetic the LLM runs in: the choices, the default, and what "auto" means on this machine. Kept free of
torch at import, so the command line can offer the choices before anything heavy loads."""

from __future__ import annotations

PRECISION_CHOICES = ("auto", "fp32", "bf16")
# fp32: on held-out real photos bf16 cost the shipped v5 model a little (2026-12-06, paired bootstrap of bf16 − fp32:
# F1 −.017 … −.000, PCC −.033 … −.001, both entirely below 0; warps all within ±.02), so "auto" stays an option
DEFAULT_PRECISION = "fp32"


def native_bf16(device="cpu") -> bool:
    """Whether `device` computes bfloat16 natively: a CUDA GPU that supports it, or a CPU with AVX512-BF16 or AMX
    (Linux: read from /proc/cpuinfo). Elsewhere bf16 autocast is emulated and slower than fp32."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device="cpu") -> str:
    """'auto' → 'bf16' where the hardware computes it natively (`native_bf16`), else 'fp32'; others as given."""
    if precision not in PRECISION_CHOICES:
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISION_CHOICES)}")
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device) else "fp32"
