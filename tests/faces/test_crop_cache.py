"""aullava.faces.crop_cache: the face-crop cache on the bundled astronaut photo, a blank image, a missing file and a video."""

from __future__ import annotations

import importlib.resources
import json
import os
import shutil

import cv2
import numpy as np
import pytest

import aullava.faces.crop_store as crop_store
from aullava.faces.crop_cache import FaceCropCache, FrameSource, as_source, video_sources

S = 224
VIDEO_FRAMES = 3


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Three copies of the face, a blank image, a missing file, a 3-frame video of the face (+ a frame past its end)."""
    folder = tmp_path_factory.mktemp("sources")
    ref = importlib.resources.files("aullava") / "resources/examples/astronaut.png"
    with importlib.resources.as_file(ref) as face:
        copies = [shutil.copy(face, folder / f"face{i}.png") for i in range(3)]
        bgr = cv2.imread(str(face))
    blank = folder / "blank.png"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 128, np.uint8))
    video = folder / "face.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (bgr.shape[1], bgr.shape[0]))
    for _ in range(VIDEO_FRAMES):
        writer.write(bgr)
    writer.release()
    return {"faces": [str(p) for p in copies], "blank": str(blank), "missing": str(folder / "missing.png"),
            "video": str(video), "folder": folder}


def _sources(data):
    return (data["faces"] + [data["blank"], data["missing"]]
            + [(data["video"], i) for i in range(VIDEO_FRAMES)] + [(data["video"], 10)])


def test_build_resume_and_failures(data, tmp_path):
    cache = FaceCropCache(tmp_path / "crops", crop_size=S)
    first = cache.build(data["faces"][:2] + [data["blank"]], workers=1, progress=False)  # an earlier partial run
    assert (first.total, first.cached, first.built, first.failed) == (3, 0, 2, 1)

    report = cache.build(_sources(data), workers=1, progress=False)
    assert (report.total, report.cached, report.built, report.skipped) == (9, 2, 1 + VIDEO_FRAMES, 1)
    assert report.failed == 2  # the missing file, the frame past the end
    reasons = {f.source: f.reason for f in report.failures}
    assert reasons[data["blank"]] == "no face found"
    assert reasons[data["missing"]] == "file not found"
    assert "past the end" in reasons[f"{data['video']}#10"]
    assert any(data["missing"] in str(f) for f in report.failures)  # str(failure) names the file

    for source in data["faces"] + [(data["video"], i) for i in range(VIDEO_FRAMES)]:
        crop = cache.get(source)
        assert crop is not None and crop.shape == (S, S, 3) and crop.dtype == np.uint8
        assert crop.std() > 20  # a real image, not an empty canvas
        meta = cache.metadata(source)
        assert meta["faces"] == 1 and len(meta["blendshapes"]) == 52 and len(meta["box"]) == 4
        assert meta["source"] == as_source(source).name and meta["landmarks"] is None
        assert cache.path(source).parent.name == cache.key(source)[:2]
    assert cache.get(data["blank"]) is None and cache.get(data["missing"]) is None
    assert np.array_equal(cache.get(data["faces"][0]), cache.get(data["faces"][2]))  # lossless, same input

    lines = [json.loads(line) for line in (cache.root / "failures.jsonl").read_text().splitlines()]
    assert {rec["source"] for rec in lines} == set(reasons)

    again = cache.build(_sources(data), workers=1, progress=False)
    assert (again.built, again.failed, again.cached, again.skipped) == (0, 0, 6, 3)
    assert {f.source for f in again.failures} == set(reasons)

    retried = cache.build([data["blank"], data["missing"]], progress=False, retry_failures=True)
    assert (retried.built, retried.failed, retried.skipped) == (0, 2, 0)
    assert not any((cache.root / ".tmp").iterdir())


def test_interrupted_build_leaves_no_partial_entry_and_resumes(data, tmp_path, monkeypatch):
    cache = FaceCropCache(tmp_path / "crops", crop_size=S, landmarks=True)
    sources = data["faces"] + [(data["video"], i) for i in range(VIDEO_FRAMES)]
    real_write = crop_store.write_entry_file
    calls = []

    def dying_write(path, payload):  # "killed" while writing the 3rd entry: its .npy is written, the rest not
        calls.append(path)
        if len(calls) == 8:
            raise KeyboardInterrupt
        real_write(path, payload)

    monkeypatch.setattr(crop_store, "write_entry_file", dying_write)
    with pytest.raises(KeyboardInterrupt):
        cache.build(sources, progress=False)
    monkeypatch.undo()
    done = [s for s in sources if cache.get(s) is not None]
    assert len(done) == 2  # 3 files per entry (npy, json, png): the 3rd entry never got its PNG
    assert not any((cache.root / ".tmp").iterdir())  # the interrupted write cleaned up after itself
    stale, fresh = cache.root / ".tmp" / "tmpkilled.png", cache.root / ".tmp" / "tmpbusy.png"  # as a SIGKILL leaves
    stale.write_bytes(b"half a PNG")
    fresh.write_bytes(b"another build is writing this")
    os.utime(stale, (1e9, 1e9))

    report = cache.build(sources, progress=False)
    assert not stale.exists() and fresh.exists()
    assert (report.cached, report.built, report.failed) == (2, len(sources) - 2, 0)
    landmarks = cache.metadata(sources[-1])["landmarks"]
    assert landmarks.shape == (478, 3) and landmarks.dtype == np.float32


def test_key_follows_file_changes_and_settings(data, tmp_path):
    face = tmp_path / "face.png"
    shutil.copy(data["faces"][0], face)
    cache = FaceCropCache(tmp_path / "crops", crop_size=S)
    key = cache.key(face)
    assert len(key) == 64 and key == cache.key(str(face)) == cache.key(FrameSource(str(face)))
    assert cache.key((data["video"], 0)) != cache.key((data["video"], 1))
    assert cache.key([data["video"], 1]) == cache.key(FrameSource(data["video"], 1))
    assert FaceCropCache(tmp_path / "crops", crop_size=112).key(face) != key
    assert cache.build([face], progress=False).built == 1 and cache.get(face) is not None

    image = cv2.imread(str(face))
    cv2.imwrite(str(face), cv2.flip(image, 1))  # new content, new size / mtime
    st = os.stat(face)
    os.utime(face, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert cache.key(face) != key and cache.get(face) is None
    assert cache.build([face], progress=False).built == 1

    # content identity: copies share one entry, touching a file keeps it
    by_content = FaceCropCache(tmp_path / "by_content", crop_size=S, identity="content")
    assert by_content.key(data["faces"][0]) == by_content.key(data["faces"][1])
    report = by_content.build(data["faces"], progress=False)
    assert (report.total, report.built) == (1, 1)
    os.utime(data["faces"][1])
    assert by_content.get(data["faces"][1]) is not None


def test_parallel_build_matches_serial(data, tmp_path):
    sources = data["faces"][:2] + [data["blank"]] + [(data["video"], i) for i in range(VIDEO_FRAMES)]
    serial = FaceCropCache(tmp_path / "serial", crop_size=S)
    serial.build(sources, workers=1, progress=False)
    parallel = FaceCropCache(tmp_path / "parallel", crop_size=S)
    report = parallel.build(sources, workers=2, progress=False)
    assert (report.built, report.failed) == (len(sources) - 1, 1)
    assert [f.source for f in report.failures] == [data["blank"]]
    for source in sources[:2] + sources[3:]:
        assert np.array_equal(parallel.get(source), serial.get(source))


def test_video_sources(data):
    assert video_sources(data["video"]) == [FrameSource(data["video"], i) for i in range(VIDEO_FRAMES)]
    assert video_sources(data["video"], step=2) == [FrameSource(data["video"], 0), FrameSource(data["video"], 2)]


def test_default_root_is_under_aullava_home(tmp_path, monkeypatch):
    monkeypatch.setenv("AULLAVA_HOME", str(tmp_path))
    assert FaceCropCache().root == tmp_path / "crops"
