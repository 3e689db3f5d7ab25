"""Several processes on one or more machines, as started by `torchrun` or `accelerate launch`.

Training needs nothing from here: the Hugging Face `Trainer` reads the launcher's environment and shards the data
itself. Prediction does: every process loads the model once, takes one contiguous block of the inputs (so joining
the blocks in rank order restores the input order) and either sends its results to rank 0, which writes the one
table, or writes its own shard of the table for `merge_shards` to join (no traffic between machines, and no
machine ever holds the whole table before the merge).

Results travel over a gloo process group (CPU tensors and pickled Python objects between our own processes), so
the same code serves CPU-only machines and GPU ones.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

SHARD_PATTERN = re.compile(r"part-(\d{5})-of-(\d{5})\.csv")
MERGED_NAME = "predictions.csv"


@dataclass(frozen=True)
class ProcessInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def process_info() -> ProcessInfo:
    """This process's place, from the variables torchrun / accelerate launch set (a single process without them)."""
    env = os.environ
    return ProcessInfo(rank=int(env.get("RANK", 0)), world_size=int(env.get("WORLD_SIZE", 1)),
                       local_rank=int(env.get("LOCAL_RANK", 0)))


def shard_bounds(count: int, info: ProcessInfo) -> tuple[int, int]:
    """[start, stop) of this rank's contiguous block of `count` inputs; block sizes differ by at most one."""
    base, extra = divmod(count, info.world_size)
    start = info.rank * base + min(info.rank, extra)
    return start, start + base + (1 if info.rank < extra else 0)


def shard_name(info: ProcessInfo) -> str:
    return f"part-{info.rank:05d}-of-{info.world_size:05d}.csv"


class ProcessGroup:
    """A gloo group for the lifetime of a `with` block (none for a single process)."""

    def __init__(self, info: ProcessInfo):
        self.info = info
        self._owned = False

    def __enter__(self) -> "ProcessGroup":
        import torch.distributed as dist

        if self.info.distributed and not dist.is_initialized():
            dist.init_process_group("gloo")
            self._owned = True
        return self

    def __exit__(self, *exc) -> None:
        import torch.distributed as dist

        if self._owned:
            dist.destroy_process_group()

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's `obj` on rank 0, in rank order (None on the other ranks)."""
        if not self.info.distributed:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.info.world_size if self.info.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def barrier(self) -> None:
        if self.info.distributed:
            import torch.distributed as dist

            dist.barrier()


def merge_shards(directory: str | Path) -> pd.DataFrame:
    """Joins `part-RRRRR-of-WWWWW.csv` shards of one run in rank order; refuses a set with parts missing or from
    runs with different numbers of processes, naming what is wrong."""
    directory = Path(directory)
    found: dict[int, set[int]] = {}
    for path in directory.iterdir():
        match = SHARD_PATTERN.fullmatch(path.name)
        if match:
            found.setdefault(int(match.group(2)), set()).add(int(match.group(1)))
    if not found:
        raise FileNotFoundError(f"{directory}: no prediction shards (part-NNNNN-of-NNNNN.csv)")
    if len(found) > 1:
        raise ValueError(f"{directory}: shards of runs with {sorted(found)} processes; keep one run's shards")
    (world, parts), = found.items()
    missing = sorted(set(range(world)) - parts)
    if missing:
        raise ValueError(f"{directory}: shards {missing} of {world} are missing (still running, or on another "
                         "machine: copy them here)")
    frames = [pd.read_csv(directory / shard_name(ProcessInfo(rank, world))) for rank in range(world)]
    for rank, frame in enumerate(frames[1:], start=1):
        if list(frame.columns) != list(frames[0].columns):
            extra = sorted(set(frame.columns) ^ set(frames[0].columns))
            said = f"columns {', '.join(extra[:4])}{' …' if len(extra) > 4 else ''} in one but not the other" \
                if extra else "the same columns in another order"
            raise ValueError(f"{directory}: {shard_name(ProcessInfo(rank, world))} and "
                             f"{shard_name(ProcessInfo(0, world))} differ ({said}): shards of different runs")
    frames = [f for f in frames if len(f)] or frames[:1]
    return pd.concat(frames, ignore_index=True)[list(frames[0].columns)]
