"""Vision warm-up: teach the visual tokens about AUs before the LLM has to read them.

Why: LLaVA's first stage aligns the projector on captions; we have no captions, and on a CPU budget the LLM stage
sees only a few thousand examples. Started from ImageNet features, the LLM then learns the answer prior (every AU
absent) long before it learns to look at the image: our first 250-step run answered "absent" for every AU. This
stage trains what the LLM stage would train on the image side — the encoder's LoRA weights and the projector —
through a throwaway linear AU head on the projected tokens, at ~0.05 s per image instead of ~0.7 s per LLM
example. The LLM stage then starts from visual tokens that already carry the AU intensities, rescaled to the norm of
the LLM's text embeddings (`match_embedding_scale`).

A model with the geometry stream (`model.geometry`) warms it up in the same pass: the head reads the face's tokens
(image, then geometry), so the geometry encoder and its projector learn the AUs before the LLM stage too, and are
rescaled to the text embeddings' norm like the visual tokens.

A killed warm-up resumes: every `save_every` steps the trainable weights, the AU head, the optimizer and the
schedule are written to a progress folder (a whole folder renamed into place, so a kill leaves the previous one
intact), and the next run continues from that step with a fresh shuffle of the data.

Loss: masked mean squared error on the continuous intensities (an AU a dataset does not label does not count).
Samples whose datasets have no continuous labels are skipped; binary/discrete-only datasets (BP4D occurrence, say)
are mapped to the continuous scale by their format's value → intensity rule.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset

from aullava.aus.answer_format import AnswerFormat
from aullava.training.steps import run_steps

log = logging.getLogger(__name__)


class AUHead(nn.Module):
    """Linear read-out of every AU from all projected visual tokens (discarded after the warm-up)."""

    def __init__(self, num_tokens: int, text_size: int, num_aus: int):
        super().__init__()
        self.linear = nn.Linear(num_tokens * text_size, num_aus)
        nn.init.zeros_(self.linear.weight)

    def forward(self, visual: torch.Tensor) -> torch.Tensor:
        return self.linear(visual.flatten(1))


def _intensity_targets(sample: dict[str, Any], au_set) -> tuple[np.ndarray, np.ndarray]:
    """A sample's labels on the model's AU set as continuous intensities in [0, 1] + a mask of labelled AUs.
    Continuous labels win; otherwise discrete (level / 5) or binary (absent 0, present 0.5: mid-scale)."""
    au_ids = au_set.ids
    values = np.zeros(len(au_ids), dtype=np.float32)
    mask = np.zeros(len(au_ids), dtype=bool)
    for fmt in (AnswerFormat.BINARY, AnswerFormat.DISCRETE, AnswerFormat.CONTINUOUS):  # later ones overwrite
        if fmt.value not in sample["targets"]:
            continue
        subset = (sample.get("au_sets") or {}).get(fmt.value, sample.get("au_set")) or au_set
        labelled = (sample.get("masks") or {}).get(fmt.value, sample.get("mask"))
        for j, au in enumerate(subset.ids):
            if au not in au_ids or (labelled is not None and not labelled[j]):
                continue
            value = float(sample["targets"][fmt.value][j])
            value = value / 5.0 if fmt is AnswerFormat.DISCRETE else value * 0.5 if fmt is AnswerFormat.BINARY \
                else value
            values[au_ids.index(au)] = value
            mask[au_ids.index(au)] = True
    return values, mask


class _IntensityView(Dataset):
    def __init__(self, base: Dataset, au_set, geometry: bool = False):
        self.base, self.au_set, self.geometry = base, au_set, geometry

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        sample = self.base[index]
        values, mask = _intensity_targets(sample, self.au_set)
        image = torch.from_numpy(np.ascontiguousarray(sample["image"]))
        # a model without the geometry stream gets an empty vector (the default collate needs a tensor)
        shape = torch.from_numpy(np.asarray(sample["geometry"], dtype=np.float32)) if self.geometry else torch.zeros(0)
        return image, shape, torch.from_numpy(values), torch.from_numpy(mask)


def warm_up_vision(model, dataset: Dataset, steps: int, batch_size: int = 32, learning_rate: float = 1e-3,
                   seed: int = 0, log_every: int = 20, progress_dir: str | Path | None = None,
                   save_every: int = 100, save: bool = True) -> tuple[list[float], AUHead]:
    """Trains the model's trainable vision-side weights (encoder LoRA or full, projector) for `steps` batches
    and the geometry stream (if the model has one) through an `AUHead`; the LLM is not run. Returns the per-step
    losses and the head (for diagnostics). With `progress_dir`, resumes from the progress saved there and saves
    progress every `save_every` steps (only where `save`: one rank of a distributed run writes)."""
    geometry = bool(getattr(model, "wants_geometry", False))
    text_size = model.language_model.get_input_embeddings().embedding_dim
    head = AUHead(model.processor.num_face_tokens, text_size, len(model.au_set))
    params = [p for p in model.vision_encoder.parameters() if p.requires_grad] + list(model.projector.parameters())
    if geometry:
        params += list(model.geometry_encoder.parameters()) + list(model.geometry_projector.parameters())
    optimizer = torch.optim.AdamW([{"params": params}, {"params": head.parameters()}], lr=learning_rate,
                                  weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / max(1, steps // 20)) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    progress_dir = Path(progress_dir) if progress_dir is not None else None
    losses: list[float] = _load_progress(progress_dir, model, head, optimizer, schedule, steps) \
        if progress_dir is not None else []
    # a resumed run reshuffles from a seed of its own: the same order again would repeat the first batches
    generator = torch.Generator().manual_seed(seed if not losses else seed * 1_000_003 + len(losses))
    loader = DataLoader(_IntensityView(dataset, model.au_set, geometry), batch_size=batch_size, shuffle=True,
                        drop_last=True, generator=generator)
    if len(loader) == 0:
        raise ValueError(f"vision warm-up needs at least batch_size={batch_size} samples, "
                         f"the dataset has {len(dataset)}")
    def step(batch) -> float:
        images, shapes, targets, mask = batch
        visual = model.face_tokens(images, shapes if geometry else None)
        error = (head(visual) - targets) ** 2 * mask
        loss = error.sum() / mask.sum().clamp(min=1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        step.last = images, shapes  # the last batch: what the tokens are rescaled on
        return loss.item()

    def save_now(done: int) -> None:
        if progress_dir is not None and save and done % save_every == 0 and done < steps:
            _save_progress(progress_dir, model, head, optimizer, schedule, losses)

    model.vision_encoder.train()
    run_steps(loader, steps, step, losses, "vision warm-up", log_every, save_now)
    images, shapes = getattr(step, "last", None) or next(iter(loader))[:2]  # (a run resumed at its end: any batch)
    model.vision_encoder.eval()
    with torch.no_grad():
        match_embedding_scale(model, images)
        if geometry:
            match_embedding_scale(model, images, shapes)
    return losses, head


PROGRESS_FILES = ("au_head.safetensors", "optimizer.pt", "progress.json")


def _save_progress(directory: Path, model, head: AUHead, optimizer, schedule, losses: list[float]) -> None:
    """Writes the warm-up's state into a fresh folder, then swaps it for the previous one."""
    fresh, previous = directory.with_name(directory.name + ".tmp"), directory.with_name(directory.name + ".old")
    shutil.rmtree(fresh, ignore_errors=True)
    model.save_pretrained(fresh)
    save_file({k: v.detach().contiguous() for k, v in head.state_dict().items()}, str(fresh / PROGRESS_FILES[0]))
    torch.save({"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict()}, fresh / PROGRESS_FILES[1])
    (fresh / PROGRESS_FILES[2]).write_text(json.dumps({"step": len(losses), "losses": losses}))
    shutil.rmtree(previous, ignore_errors=True)
    if directory.exists():
        os.replace(directory, previous)
    os.replace(fresh, directory)
    shutil.rmtree(previous, ignore_errors=True)


def _load_progress(directory: Path, model, head: AUHead, optimizer, schedule, steps: int) -> list[float]:
    """The losses so far, with the weights and optimizer restored, from `directory` (or the copy a kill between
    the two renames of `_save_progress` left as `.old`); [] if there is no complete progress to resume."""
    from aullava.model.checkpoint import CheckpointError

    for candidate in (directory, directory.with_name(directory.name + ".old")):
        if not all((candidate / name).is_file() for name in PROGRESS_FILES):
            continue
        try:
            progress = json.loads((candidate / PROGRESS_FILES[2]).read_text())
            model.load_trainable(candidate)
            head.load_state_dict(load_file(str(candidate / PROGRESS_FILES[0])))
            state = torch.load(candidate / PROGRESS_FILES[1], weights_only=True)
            optimizer.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
        except (CheckpointError, SafetensorError, ValueError, KeyError, RuntimeError, OSError) as err:
            log.warning("vision warm-up: ignoring damaged progress in %s (%s)", candidate, err)
            continue
        losses = [float(x) for x in progress["losses"]][:steps]
        log.warning("vision warm-up: resuming at step %d of %d from %s", len(losses), steps, candidate)
        return losses
    return []


@torch.no_grad()
def match_embedding_scale(model, images: torch.Tensor, geometry: torch.Tensor | None = None) -> float:
    """Rescales the projector's last linear layer so visual tokens have the mean norm of the LLM's text embeddings
    (Gemma's are ~26 after its sqrt(d) scaling) and returns the factor. The AU head is blind to scale, so after the
    warm-up the tokens are ~40× smaller than text: in the residual stream their image-dependent part then drowns,
    and the LLM stage learns a constant bias instead of reading the image (measured: at LLM step 400 the spread
    of the tokens across images was 10 % of their norm and the first answer value was the same for every face).
    With `geometry` (the faces' geometry vectors), the geometry projector is rescaled instead, by the same rule."""
    prefix, question = model.processor.prompt_ids("binary")
    text = model.language_model.get_input_embeddings()(torch.tensor([prefix + question]))
    if geometry is None:
        tokens, projector = model.projector(model.vision_encoder(model.vision_encoder.preprocess(images))), \
            model.projector
    else:
        tokens, projector = model.geometry_projector(model.geometry_encoder(geometry)), model.geometry_projector
    factor = float(text.norm(dim=-1).mean() / tokens.norm(dim=-1).mean().clamp(min=1e-6))
    last = [m for m in projector.modules() if isinstance(m, nn.Linear)][-1]
    last.weight.mul_(factor)
    if last.bias is not None:
        last.bias.mul_(factor)
    log.info("vision warm-up: %s tokens scaled by %.2f to the text embeddings' norm",
             "visual" if geometry is None else "geometry", factor)
    return factor
