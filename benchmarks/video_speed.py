"""Speed of `aullava predict` on a video on this machine: analysed frames per second, end to end (decoding, face
detection, tracking, AU readout, the table written in chunks), the model loaded and warmed up beforehand.

    .venv/bin/python benchmarks/video_speed.py                       # a 30 s 720p video made here, --every 5, binary
    .venv/bin/python benchmarks/video_speed.py --video talk.mp4 --every 5 --formats binary discrete
    .venv/bin/python benchmarks/video_speed.py --seconds 2           # a short check that it runs
    .venv/bin/python benchmarks/video_speed.py --arm runs/v2-3k:fp32:exact:0 --arm default:bf16:exact:2  # before/after

An arm is MODEL:PRECISION:READOUT:AHEAD (MODEL a checkpoint or `default`; AHEAD the chunks decoded and detected ahead
of the readout, 0 = one after the other, as before 2026-12-05); arms run one after the other on the same video.

The video made here shows the bundled example face moving across a 1280×720 frame and changing size (30 fps,
H.264), so every analysed frame has one face. Reported: analysed frames/s, faces/s, and how many seconds of video one
second of computing covers (video s per s: 1.0 is real time), with the time split into decoding + detection and
readout. Run it on an otherwise idle machine: the numbers are this CPU's, shared cores make them meaningless.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
import warnings
from importlib.resources import files
from pathlib import Path

import numpy as np


def make_video(path: Path, seconds: float, width: int = 1280, height: int = 720, rate: int = 30) -> Path:
    """The example face moving and scaling across the frame, H.264 (MPEG-4 part 2 without libx264)."""
    import av
    import cv2
    from PIL import Image

    example = Path(str(files("aullava").joinpath("resources", "examples", "astronaut.png")))
    head = np.asarray(Image.open(example).convert("RGB"))[30:250, 115:335]
    background = np.full((height, width, 3), (70, 90, 110), np.uint8)
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        n = int(round(seconds * rate))
        for i in range(n):
            side = int(height * (0.45 + 0.15 * math.sin(i / 40)))
            x = int((width - side) * (0.5 + 0.45 * math.sin(i / 90)))
            y = int((height - side) * (0.5 + 0.4 * math.cos(i / 70)))
            frame = background.copy()
            frame[y:y + side, x:x + side] = cv2.resize(head, (side, side), interpolation=cv2.INTER_AREA)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", help="a video to analyse (default: make a 720p one)")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the video made here (default 30)")
    parser.add_argument("--every", type=int, default=5, help="analyse every N-th frame (default 5)")
    parser.add_argument("--formats", nargs="+", default=["binary"], choices=["binary", "discrete", "continuous"])
    parser.add_argument("--arm", action="append", help="MODEL:PRECISION:READOUT:AHEAD (repeat; default: the "
                        "shipped model with predict's defaults)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--chunk", type=int, default=16, help="analysed frames per readout chunk")
    args = parser.parse_args(argv)

    import torch

    from aullava.faces.video_frames import probe_video

    rows = []
    with tempfile.TemporaryDirectory(prefix="aullava-video-speed-") as folder:
        video = Path(args.video) if args.video else make_video(Path(folder) / "face-720p.mp4", args.seconds)
        info = probe_video(video)
        duration = info.duration or (info.expected_frames or 0) / (info.fps or 30)
        print(f"video: {info.width}×{info.height}, {info.fps:.2f} fps, {duration:.1f} s, codec {info.codec}; "
              f"--every {args.every}, formats {' '.join(args.formats)}, torch threads {torch.get_num_threads()}, "
              f"chunk {args.chunk}")
        for arm in args.arm or [None]:
            frames, faces, elapsed, read_time = run_arm(arm, video, Path(folder), args)
            rows.append((arm or "default", frames, faces, elapsed, read_time, duration))
            print(f"{arm or 'default'}: analysed frames: {frames} ({faces} faces) in {elapsed:.1f} s; "
                  f"{frames / elapsed:.2f} analysed frames/s, {faces / elapsed:.2f} faces/s, "
                  f"{duration / elapsed:.2f} s of video per second; AU readout {read_time:.1f} s "
                  f"({frames / max(read_time, 1e-9):.2f} frames/s of readout alone)", flush=True)
    print("\n| arm | analysed frames/s | target |\n|---|---:|---:|")
    for arm, frames, _, elapsed, _, _ in rows:
        print(f"| {arm} | {frames / elapsed:.2f} | ≥ 8 |")
    return 0


def run_arm(arm: str | None, video: Path, folder: Path, args) -> tuple[int, int, float, float]:
    from aullava.faces.images import load_image
    from aullava.faces.video_frames import FrameSelection
    from aullava.inference import Predictor, to_dataframe
    from aullava.tables import TableWriter, table_columns

    options = {}
    model = None
    if arm:
        model, precision, readout, ahead = arm.split(":")
        model = None if model == "default" else model
        options = {"precision": precision, "readout": readout, "read_ahead": int(ahead)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predictor = Predictor(model, batch_size=args.batch_size, device="cpu", **options)
    example = load_image(files("aullava").joinpath("resources", "examples", "astronaut.png"))
    predictor.predict([example], args.formats)  # warm-up: MediaPipe graphs, the decoder's prefix caches
    selection = FrameSelection(every=args.every)
    columns = table_columns(predictor.model.au_set, args.formats)
    writer = TableWriter(folder / "aus.csv", "csv", columns)
    read_time = 0.0
    original_read = predictor._read

    def timed_read(crops, fmts):  # the readout's share of the time
        nonlocal read_time
        start = time.perf_counter()
        original_read(crops, fmts)
        read_time += time.perf_counter() - start

    predictor._read = timed_read
    frames = faces = 0
    start = time.perf_counter()
    for part in predictor.iter_predict([video], args.formats, selection=selection, chunk=args.chunk):
        writer.write(to_dataframe(part, predictor.model.au_set, args.formats, probabilities=True))
        frames += len(part)
        faces += sum(len(r.faces) for r in part)
    elapsed = time.perf_counter() - start
    writer.close()
    return frames, faces, elapsed, read_time


if __name__ == "__main__":
    sys.exit(main())
