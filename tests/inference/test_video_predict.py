"""`aullava predict` on videos as a user meets it: a video made here (the example face moving and changing size, a
second face entering half way) gives one row per face per analysed frame with the right frame numbers and
timestamps and two stable face ids; frame selection, broken videos next to good inputs, a run killed (a real
process, SIGKILL) and resumed, overlays, optional columns, and the tracker and head pose on their own."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from importlib.resources import files
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from aullava.cli import main
from aullava.faces.images import InputError
from aullava.faces.tracking import FaceTracker
from aullava.faces.video_frames import FrameSelection, iter_video_frames, probe_video
from aullava.tables import read_table

EXAMPLE = Path(str(files("aullava").joinpath("resources", "examples", "astronaut.png")))
W, H, FRAMES, RATE, ENTERS = 288, 224, 60, 10, 30  # the second face is there from frame ENTERS on


def _head() -> np.ndarray:
    return np.asarray(Image.open(EXAMPLE).convert("RGB"))[30:250, 115:335]  # 220×220 around the face


def scene(i: int, head: np.ndarray) -> np.ndarray:
    """Frame i: the face moves right and grows and shrinks; a mirrored, smaller face sits bottom right from ENTERS."""
    canvas = np.full((H, W, 3), (70, 90, 110), np.uint8)
    side = int(125 + 25 * math.sin(i / 9))
    x, y = int(4 + i * 1.0), 12
    canvas[y:y + side, x:x + side] = cv2.resize(head, (side, side), interpolation=cv2.INTER_AREA)
    if i >= ENTERS:
        canvas[H - 114:H - 4, W - 114:W - 4] = cv2.resize(head[:, ::-1], (110, 110), interpolation=cv2.INTER_AREA)
    return canvas


def write_video(path: Path, frames, rate: int = RATE, codec: str = "libx264") -> Path:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for picture in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    head = _head()
    return write_video(tmp_path_factory.mktemp("video") / "two faces.mp4", [scene(i, head) for i in range(FRAMES)])


@pytest.fixture(scope="module")
def full_run(clip, tiny_checkpoint, tmp_path_factory):
    """The uninterrupted run every other check compares with."""
    out = tmp_path_factory.mktemp("full") / "aus.csv"
    assert main(["predict", str(clip), "--model", str(tiny_checkpoint), "--formats", "binary", "--out", str(out),
                 "-q"]) == 0
    return out


def test_one_row_per_face_per_frame_with_times_and_stable_ids(full_run, clip):
    table = pd.read_csv(full_run)
    assert list(table.columns[:16]) == ["file", "frame", "timestamp", "face", "face_id", "success", "confidence",
                                        "x0", "y0", "x1", "y1", "pose_pitch", "pose_yaw", "pose_roll",
                                        "gaze_angle_x", "gaze_angle_y"]
    assert table.columns[-1] == "error" and table["error"].isna().all()
    assert (table["file"] == str(clip)).all() and (table["success"] == 1).all()
    per_frame = table.groupby("frame").size()
    assert list(per_frame.index) == list(range(FRAMES))
    assert list(per_frame) == [1] * ENTERS + [2] * (FRAMES - ENTERS)
    assert np.allclose(table["timestamp"], table["frame"] / RATE)
    moving = table[table["x0"] < W / 2]  # the first face never reaches the right half; the newcomer stays there
    newcomer = table[table["x0"] >= W / 2]
    assert set(moving["face_id"]) == {0} and len(moving) == FRAMES
    assert set(newcomer["face_id"]) == {1} and newcomer["frame"].min() == ENTERS
    assert table["confidence"].between(0.5, 1).all()
    assert table[["pose_pitch", "pose_yaw", "pose_roll"]].abs().lt(90).all().all()
    assert table[["gaze_angle_x", "gaze_angle_y"]].abs().lt(1.2).all().all()  # radians; NaN would fail
    assert table["AU01_c"].isin([0, 1]).all() and table["AU01_p"].between(0, 1).all()


def test_frame_selection(clip, tiny_checkpoint, tmp_path):
    def frames(**kwargs) -> list[int]:
        return [f.index for f in iter_video_frames(clip, FrameSelection(**kwargs))]

    assert frames() == list(range(FRAMES))
    assert frames(every=7) == list(range(0, FRAMES, 7))
    assert frames(fps=2.5) == list(range(0, FRAMES, 4))  # 10 fps → every 0.4 s
    assert frames(start=1.0, end=2.0) == list(range(10, 20))  # end exclusive
    assert frames(every=4, start=0.5, end=3.0) == [5, 9, 13, 17, 21, 25, 29]  # counted from the first one taken
    first = next(iter_video_frames(clip, FrameSelection(start=2.05)))
    assert (first.index, first.timestamp) == (21, pytest.approx(2.1)) and first.image.shape == (H, W, 3)
    out = tmp_path / "aus.parquet"
    assert main(["predict", str(clip), "--model", str(tiny_checkpoint), "--formats", "binary", "--every", "5",
                 "--start", "2.5", "--end", "4", "--out", str(out), "-q"]) == 0
    table = pd.read_parquet(out)
    assert sorted(set(table["frame"])) == [25, 30, 35] and np.allclose(table["timestamp"], table["frame"] / RATE)
    assert not out.with_name(out.name + ".partial.csv").exists()  # the journal is gone once the table is written


@pytest.mark.parametrize("argv, words", [
    (["--every", "2", "--fps", "5"], "--every and --fps"),
    (["--start", "3", "--end", "2"], "must be later than --start"),
    (["--resume"], "give --out"),
    (["--resume", "--out", "x.csv", "--overlay", "pictures"], "cannot be continued"),
    (["--fps", "0"], "must be > 0"),
])
def test_bad_video_options_stop_before_the_model_loads(clip, tiny_checkpoint, argv, words, capsys, monkeypatch,
                                                       tmp_path):
    monkeypatch.chdir(tmp_path)
    started = time.monotonic()
    try:
        code = main(["predict", str(clip), "--model", str(tiny_checkpoint), *argv])
    except SystemExit as stop:  # argparse's own checks
        code = stop.code
    assert code == 2 and time.monotonic() - started < 5
    assert words in capsys.readouterr().err


def broken_videos(folder: Path) -> dict[str, str]:
    """Every way a video can be unusable, as files in `folder`: name → words its error line must hold."""
    import av

    small = [np.full((48, 64, 3), 16 * i, np.uint8) for i in range(12)]
    write_video(folder / "good.avi", small, codec="mpeg4")
    data = (folder / "good.avi").read_bytes()
    (folder / "truncated.avi").write_bytes(data[:len(data) * 2 // 3])
    (folder / "codec.avi").write_bytes(data.replace(b"FMP4", b"QQQQ"))  # a codec tag FFmpeg has no decoder for
    (folder / "good.avi").unlink()
    (folder / "notes.mp4").write_text("not a video\n")
    with av.open(str(folder / "empty.avi"), "w") as container:  # a video stream with no frame
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()
    return {"truncated.avi": "truncated", "codec.avi": "unsupported video codec", "notes.mp4": "not a video",
            "empty.avi": "no decodable video frame"}


def test_broken_videos_get_one_line_and_the_rest_completes(clip, tiny_checkpoint, tmp_path, capsys):
    folder = tmp_path / "inputs"
    folder.mkdir()
    bad = broken_videos(folder)
    for name in bad:
        with pytest.raises(InputError, match=bad[name]):
            list(iter_video_frames(folder / name))
    (folder / "clip.mp4").write_bytes(clip.read_bytes())
    (folder / "face.png").write_bytes(EXAMPLE.read_bytes())
    out = tmp_path / "aus.csv"
    code = main(["predict", str(folder), "--model", str(tiny_checkpoint), "--formats", "binary", "--every", "10",
                 "--out", str(out), "-q"])
    assert code == 1
    err = capsys.readouterr().err
    for name, words in bad.items():
        lines = [line for line in err.splitlines() if line.startswith("error: ") and name in line]
        assert len(lines) == 1 and words in lines[0] and "Traceback" not in err, (name, err)
    table = pd.read_csv(out)
    video = table[table["file"] == str(folder / "clip.mp4")]
    assert sorted(set(video["frame"])) == list(range(0, FRAMES, 10)) and (video["success"] == 1).all()
    photo = table[table["file"] == str(folder / "face.png")]
    assert len(photo) == 1 and photo["frame"].isna().all() and photo["face_id"].tolist() == [0]
    failed = table[table["error"].notna()]
    assert sorted(Path(f).name for f in failed["file"]) == sorted(bad) and (failed["success"] == 0).all()


def same_table(got: pd.DataFrame, expected: pd.DataFrame, rtol: float = 0.0) -> None:
    """Equal rows: names, frames, ids and answers exactly, times, boxes and poses exactly (`rtol`: JSON keeps 15
    digits); the model's probabilities to float32 rounding (faces batched differently around a chunk boundary
    give the last digits of a float32 matmul)."""
    assert list(got.columns) == list(expected.columns)
    probabilities = [c for c in expected.columns if c.endswith(("_p", "_mean"))]
    floats = [c for c in expected.columns if expected[c].dtype == "float64" and c not in probabilities]
    others = [c for c in expected.columns if c not in floats + probabilities]
    pd.testing.assert_frame_equal(got[others], expected[others], check_exact=True)
    pd.testing.assert_frame_equal(got[floats], expected[floats], check_exact=not rtol, rtol=rtol or 1e-5)
    pd.testing.assert_frame_equal(got[probabilities], expected[probabilities], check_exact=False, rtol=1e-5)


def test_killed_then_resumed_equals_uninterrupted(clip, tiny_checkpoint, full_run, tmp_path):
    """A real `aullava predict` process is killed (SIGKILL) after a few chunks; the half-written last line a kill
    can leave is added on top; `--resume` then finishes the table, which must equal the uninterrupted one."""
    out = tmp_path / "aus.csv"
    command = [sys.executable, "-m", "aullava.cli", "predict", str(clip), "--model", str(tiny_checkpoint),
               "--formats", "binary", "--out", str(out), "--chunk", "4", "-q"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if out.exists() and len(out.read_text().splitlines()) > 12:  # three chunks of 4 frames are on disk
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()[-2000:]
    kept = out.read_text()
    assert 12 <= len(kept.splitlines()) - 1 < FRAMES + ENTERS  # killed part way
    with open(out, "a") as handle:
        handle.write(str(clip) + ",59,5.9,0,0,1,0.93")  # a line cut in half
    assert main(["predict", str(clip), "--model", str(tiny_checkpoint), "--formats", "binary", "--out", str(out),
                 "--chunk", "4", "--resume", "-q"]) == 0
    expected = read_table(full_run, "csv")
    same_table(read_table(out, "csv"), expected)
    assert out.read_text().splitlines()[0] == full_run.read_text().splitlines()[0]
    assert main(["predict", str(clip), "--model", str(tiny_checkpoint), "--formats", "binary", "--out", str(out),
                 "--resume", "-q"]) == 0  # nothing left but the last frame, which is done again
    same_table(read_table(out, "csv"), expected)


def test_json_and_parquet_resume_from_the_journal(clip, tiny_checkpoint, full_run, tmp_path):
    """JSON and Parquet are written at the end from `<out>.partial.csv`; a run that left only the journal (first
    50 frames here, as a kill would) is finished by --resume."""
    expected = read_table(full_run, "csv")
    for suffix in (".json", ".parquet"):
        out = tmp_path / f"aus{suffix}"
        journal = out.with_name(out.name + ".partial.csv")
        journal.write_text(expected[expected["frame"] < 50].to_csv(index=False))
        assert main(["predict", str(clip), "--model", str(tiny_checkpoint), "--formats", "binary", "--out", str(out),
                     "--resume", "-q"]) == 0
        assert not journal.exists()
        same_table(read_table(out, suffix[1:]), expected, rtol=1e-12 if suffix == ".json" else 0.0)


def test_overlays_and_optional_columns(clip, tiny_checkpoint, tmp_path):
    out, pictures = tmp_path / "aus.csv", tmp_path / "overlay"
    assert main(["predict", str(clip), str(EXAMPLE), "--model", str(tiny_checkpoint), "--formats", "binary",
                 "continuous", "--fps", "2", "--blendshapes", "--landmarks", "--overlay", str(pictures),
                 "--out", str(out), "-q"]) == 0
    assert sorted(p.name for p in pictures.iterdir()) == ["astronaut.png", "two faces.mp4"]
    drawn = np.asarray(Image.open(pictures / "astronaut.png").convert("RGB"))
    original = np.asarray(Image.open(EXAMPLE).convert("RGB"))
    assert drawn.shape == original.shape and np.abs(drawn.astype(int) - original).mean() > 1
    video = probe_video(pictures / "two faces.mp4")
    frames = list(iter_video_frames(pictures / "two faces.mp4"))
    assert (video.width, video.height) == (W, H) and len(frames) == FRAMES // 5
    assert [round(f.timestamp, 2) for f in frames] == [0.5 * k for k in range(FRAMES // 5)]  # the real time
    table = pd.read_csv(out)
    blend = [c for c in table.columns if c.startswith("bs_")]
    assert len(blend) == 52 and "bs_jawOpen" in blend and table[blend].stack().between(0, 1).all()
    for axis in "xyz":
        assert f"{axis}_0" in table.columns and f"{axis}_477" in table.columns and f"{axis}_478" not in table.columns
    faces = table[table["success"] == 1]
    assert (faces["x_1"].between(faces["x0"], faces["x1"]) & faces["y_1"].between(faces["y0"], faces["y1"])).all()
    assert list(table.columns).index("bs__neutral") > list(table.columns).index("AU26_i_mean")
    assert main(["plot", str(out), "--out", str(tmp_path / "plots")]) == 0  # time series per tracked face
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "astronaut_face0_continuous.png", "two faces_face0_continuous.png", "two faces_face1_continuous.png"]


def test_tracker_keeps_ids_over_short_gaps_and_retires_them_after_long_ones():
    tracker = FaceTracker(max_gap=3)
    a, b = (10, 10, 50, 50), (100, 10, 140, 50)
    assert tracker.update([b, a]) == [1, 0]  # new faces numbered left to right
    assert tracker.update([(14, 10, 54, 50)]) == [0]  # b hidden for a frame
    assert tracker.update([(18, 10, 58, 50), b]) == [0, 1]  # and back: same id
    for _ in range(4):
        tracker.update([])
    assert tracker.update([(18, 10, 58, 50)]) == [2]  # gone for more than max_gap frames: a new id
    assert tracker.update([(18, 10, 58, 50), (300, 0, 340, 40)]) == [2, 3]


def test_head_pose_follows_rotation_and_mirroring(detector):
    image = np.asarray(Image.open(EXAMPLE).convert("RGB"))
    h, w = image.shape[:2]
    (upright,) = detector.detect(image)
    (mirrored,) = detector.detect(np.ascontiguousarray(image[:, ::-1]))
    rotation = cv2.getRotationMatrix2D((w / 2, h / 2), 20, 1.0)  # 20° counter-clockwise as the picture is seen
    (tilted,) = detector.detect(cv2.warpAffine(image, rotation, (w, h)))
    pitch, yaw, roll = upright.pose
    assert tilted.pose[2] - roll == pytest.approx(20, abs=4)
    assert mirrored.pose[0] == pytest.approx(pitch, abs=3)
    assert mirrored.pose[1] == pytest.approx(-yaw, abs=3) and mirrored.pose[2] == pytest.approx(-roll, abs=3)
    assert 0.5 <= upright.confidence <= 1
