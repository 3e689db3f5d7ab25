"""Splits held-out manifests by identity into a calibration half and a test half, so the probabilities' calibration
(`aullava calibrate`) is fitted on people the reports never show.

    .venv/bin/python scripts/split_held_out.py runs/data/synth/held_out.csv runs/data/teacher/real_held_out.csv

writes NAME_calib.csv and NAME_test.csv beside each manifest. The half an identity falls in is CRC-32 of its
`subject` modulo 2: the same on every machine and run, whatever the order of the rows.
"""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

import pandas as pd


def split(manifest: Path) -> tuple[Path, Path]:
    table = pd.read_csv(manifest)
    if "subject" not in table.columns:
        raise SystemExit(f"error: {manifest}: no subject column to split identities by")
    half = table["subject"].astype(str).map(lambda s: zlib.crc32(s.encode("utf-8")) % 2)
    calib, test = manifest.with_name(manifest.stem + "_calib.csv"), manifest.with_name(manifest.stem + "_test.csv")
    table[half == 0].to_csv(calib, index=False)
    table[half == 1].to_csv(test, index=False)
    print(f"{manifest}: {int((half == 0).sum())} rows to {calib.name}, {int((half == 1).sum())} to {test.name} "
          f"({table['subject'].nunique()} identities)")
    return calib, test


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    for name in sys.argv[1:]:
        split(Path(name))
