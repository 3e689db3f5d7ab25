"""The plain optimisation loop the two image-side stages share (the LLM stage is Hugging Face's `Trainer`)."""

from __future__ import annotations

import logging
from typing import Callable, Iterable

import numpy as np

log = logging.getLogger(__name__)


def run_steps(loader: Iterable, steps: int, step: Callable[[object], float], losses: list[float], desc: str,
              log_every: int = 20, after_step: Callable[[int], None] | None = None) -> list[float]:
    """Calls `step(batch)` (which runs one optimiser step and returns its loss) over `loader`, again and again (a
    shuffling loader reshuffles), until `losses` holds `steps` losses; a progress bar and a log line every
    `log_every` steps; `after_step(n)` after each (e.g. saving progress). `losses` may start non-empty (a resumed
    run) and is returned."""
    from tqdm import tqdm

    bar = tqdm(total=steps, initial=len(losses), desc=desc, unit="step")
    while len(losses) < steps:
        for batch in loader:
            losses.append(float(step(batch)))
            bar.update(1)
            if len(losses) % log_every == 0:
                recent = float(np.mean(losses[-log_every:]))
                bar.set_postfix(loss=f"{recent:.4f}")
                log.info("%s step %d: loss %.4f", desc, len(losses), recent)
            if after_step is not None:
                after_step(len(losses))
            if len(losses) >= steps:
                break
    bar.close()
    return losses
