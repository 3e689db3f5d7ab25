"""aullava.faces.video on tiny MJPG AVIs written here: frame count, frame content, damaged and missing files."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from aullava.faces.images import InputError
from aullava.faces.video import read_frames, video_frame_count

N = 12
STEP = 20  # frame i is a flat grey of level i * STEP: the decoded content tells which frame we got


def _write_avi(path, n=N, size=(64, 48)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    assert writer.isOpened()
    for i in range(n):
        writer.write(np.full((size[1], size[0], 3), i * STEP, np.uint8))
    writer.release()
    return path


def _level(frame: np.ndarray) -> int:
    """Which frame a decoded grey image is (JPEG shifts levels by a few units)."""
    return int(round(float(frame.mean()) / STEP))


def _jpeg_starts(data: bytes) -> list[int]:
    return [i for i in range(len(data) - 2) if data[i:i + 3] == b"\xff\xd8\xff"]


@pytest.fixture(scope="module")
def avi(tmp_path_factory):
    return _write_avi(tmp_path_factory.mktemp("video") / "grey.avi")


def test_frame_count(avi):
    assert video_frame_count(avi) == N


def test_read_requested_frames_with_right_content(avi):
    got = list(read_frames(avi, [9, 0, 3, 3, 4, 11]))  # unsorted, duplicated on purpose
    assert [i for i, _ in got] == [0, 3, 4, 9, 11]
    for i, frame in got:
        assert isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.shape == (48, 64, 3)
        assert _level(frame) == i


@pytest.mark.parametrize("seek_gap", [None, 1])
def test_seeking_and_sequential_decoding_agree(avi, seek_gap):
    got = dict(read_frames(avi, [1, 7, 10], seek_gap=seek_gap))
    assert {i: _level(f) for i, f in got.items()} == {1: 1, 7: 7, 10: 10}


def test_frames_past_the_end_are_errors_not_the_end_of_iteration(avi):
    got = dict(read_frames(avi, [2, N, N + 5, -1]))
    assert _level(got[2]) == 2
    for i in (N, N + 5, -1):
        assert isinstance(got[i], InputError)
        assert got[i].path == f"{avi}#{i}"


def test_damaged_frame_is_reported_and_the_rest_still_decoded(avi, tmp_path):
    data = bytearray(avi.read_bytes())
    start = _jpeg_starts(bytes(data))[5]
    data[start:start + 200] = b"\x55" * 200  # frame 5's JPEG header is gone
    broken = tmp_path / "damaged.avi"
    broken.write_bytes(bytes(data))
    assert video_frame_count(broken) == N  # the damaged frame keeps its place in the numbering
    for gap in (None, 1):
        got = dict(read_frames(broken, [4, 5, 6, 9], seek_gap=gap))
        assert isinstance(got[5], InputError) and got[5].path == f"{broken}#5"
        assert {i: _level(got[i]) for i in (4, 6, 9)} == {4: 4, 6: 6, 9: 9}
    got = dict(read_frames(broken, [9], seek_gap=1))  # the seek is stopped by frame 5: must not return frame 6
    assert _level(got[9]) == 9


def test_truncated_video_counts_decodable_frames(avi, tmp_path):
    data = avi.read_bytes()
    cut = _jpeg_starts(data)[N - 1] + 50  # the last frame is cut short, and the index at the end is gone
    truncated = tmp_path / "truncated.avi"
    truncated.write_bytes(data[:cut])
    assert video_frame_count(truncated) == N - 1
    got = dict(read_frames(truncated, [0, N - 2, N - 1]))
    assert _level(got[N - 2]) == N - 2
    assert isinstance(got[N - 1], InputError)


@pytest.mark.parametrize("content", [b"", b"RIFF" + b"\0" * 100, b"not a video at all\n" * 50, "half"])
def test_broken_file_raises_input_error_naming_it(avi, tmp_path, content):
    path = tmp_path / "broken.avi"
    path.write_bytes(avi.read_bytes()[:len(avi.read_bytes()) // 2] if content == "half" else content)
    with pytest.raises(InputError) as info:
        video_frame_count(path)
    assert info.value.path == str(path) and str(path) in str(info.value)
    (index, err), = read_frames(path, [0])
    assert index == 0 and isinstance(err, InputError) and err.path == f"{path}#0"


def test_missing_file(tmp_path):
    path = tmp_path / "nope.avi"
    with pytest.raises(InputError, match="file not found") as info:
        video_frame_count(path)
    assert info.value.path == str(path)
    got = list(read_frames(path, [0, 1]))
    assert [i for i, _ in got] == [0, 1]
    assert all(isinstance(e, InputError) and "file not found" in str(e) for _, e in got)
    with pytest.raises(InputError, match="directory"):
        video_frame_count(tmp_path)
