"""`aullava serve` as a user meets it: a real server process on a loopback port, spoken to over HTTP. Its answers
match the predict table, bad uploads get a clear JSON error with the right status, and nothing of an upload is left
on disk (the server runs in an empty folder with its own TMPDIR)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest

from aullava.cli import main

EXAMPLE = Path(str(files("aullava").joinpath("resources", "examples", "astronaut.png")))
LIMIT_MB = 1.0  # the tiny server's upload limit: the example face (0.8 MB) fits, 1.5 MB does not


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """`python -m aullava.cli serve` in a subprocess, in an empty working folder with its own TMPDIR."""

    def __init__(self, folder: Path, *args: str):
        self.cwd, self.tmp = folder / "cwd", folder / "tmp"
        self.cwd.mkdir()
        self.tmp.mkdir()
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = folder / "server.log"
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen([sys.executable, "-m", "aullava.cli", "serve", "--port", str(port), *args],
                                        cwd=self.cwd, env={**os.environ, "TMPDIR": str(self.tmp)},
                                        stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the server stopped: {self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.3)
        pytest.fail(f"the server did not answer in {timeout} s: {self.log_path.read_text()}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


def get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, response.read(), response.headers.get("content-type", "")
    except urllib.error.HTTPError as err:
        return err.code, err.read(), err.headers.get("content-type", "")


def post(url: str, name: str | None = None, data: bytes = b"", fields: dict | None = None,
         chunked: bool = False) -> tuple[int, dict]:
    """A multipart/form-data upload, as a browser or `curl -F file=@…` sends it; the answer's status and JSON."""
    boundary = "aullava-test-7d1c"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
             for key, value in (fields or {}).items()]
    if name is not None:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    payload = (body[i:i + 65536] for i in range(0, len(body), 65536)) if chunked else body
    request = urllib.request.Request(url, data=payload, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tmp_path_factory):
    running = Server(tmp_path_factory.mktemp("serve"), "--model", str(tiny_checkpoint),
                     "--max-upload-mb", str(LIMIT_MB))
    running.wait_ready()
    running.tmp_at_start = sorted(p.name for p in running.tmp.iterdir())
    yield running
    running.stop()


def test_health_names_the_model_and_its_aus(server, tiny_checkpoint):
    status, body, kind = get(server.url + "/health")
    health = json.loads(body)
    assert status == 200 and kind.startswith("application/json")
    assert health["model"] == str(tiny_checkpoint) and health["trained"] is False
    assert [a["id"] for a in health["aus"]][:3] == ["AU1", "AU2", "AU4"] and len(health["aus"]) == 15
    assert health["aus"][0]["name"] == "Inner Brow Raiser"
    assert health["max_upload_bytes"] == int(LIMIT_MB * 1e6)


def test_predict_answers_the_predict_table_rows(server, tiny_checkpoint):
    from aullava.inference import Predictor

    status, answer = post(server.url + "/predict", EXAMPLE.name, EXAMPLE.read_bytes())
    assert status == 200, answer
    table = Predictor(tiny_checkpoint).predict_table([EXAMPLE])  # what `aullava predict --out` writes
    assert answer["columns"] == list(table.columns) and len(answer["rows"]) == len(table) == 1
    row, expected = answer["rows"][0], table.iloc[0]
    assert row["file"] == "astronaut.png" and row["error"] is None
    for column in table.columns[1:-1]:  # a photo's frame and timestamp are empty: null in JSON
        if expected.isna()[column]:
            assert row[column] is None, column
        else:
            assert row[column] == pytest.approx(float(expected[column]), abs=1e-6), column
    (face,) = answer["faces"]
    width, height = answer["image_size"]
    x0, y0, x1, y1 = face["box"]
    assert (width, height) == (512, 512) and 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    assert set(face["values"]) == set(face["texts"]) == {"binary", "discrete", "continuous"}
    p_present = np.array(face["expected"]["binary"], float)
    assert p_present.shape == (15,) and ((p_present >= 0) & (p_present <= 1)).all()


def test_formats_choose_the_columns(server):
    status, answer = post(server.url + "/predict?formats=binary", EXAMPLE.name, EXAMPLE.read_bytes())
    assert status == 200
    assert "AU01_c" in answer["columns"] and "AU01_r" not in answer["columns"]
    assert set(answer["faces"][0]["values"]) == {"binary"}
    status, answer = post(server.url + "/predict", EXAMPLE.name, EXAMPLE.read_bytes(), {"formats": "smiles"})
    assert status == 422 and "unknown format 'smiles'" in answer["error"]


def test_simultaneous_requests_are_each_answered(server):
    """The predictor runs one request at a time; the others wait their turn instead of failing or mixing up."""
    from concurrent.futures import ThreadPoolExecutor

    def ask(_):
        return post(server.url + "/predict?formats=binary", EXAMPLE.name, EXAMPLE.read_bytes())

    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(ask, range(3)))
    assert [code for code, _ in answers] == [200, 200, 200]
    assert all(answer["rows"] == answers[0][1]["rows"] for _, answer in answers)


def test_the_page_and_what_it_fetches_are_served(server):
    status, page, kind = get(server.url + "/")
    assert status == 200 and kind.startswith("text/html")
    for asset in re.findall(r'(?:src|href)="(static/[^"]+)"', page.decode()):
        assert get(f"{server.url}/{asset}")[0] == 200, asset
    script = get(server.url + "/static/app.js")[1].decode()
    assert "cdn" not in (page.decode() + script).lower() and "https://" not in page.decode() + script  # offline
    for target in set(re.findall(r'fetch\("([^"]+)"', script)) - {"predict"}:
        assert get(f"{server.url}/{target}")[0] == 200, target
    status, example, kind = get(server.url + "/example.png")
    assert kind == "image/png" and example == EXAMPLE.read_bytes()


@pytest.mark.parametrize("name, data, status, words", [
    ("notes.txt", b"not a picture\n", 415, "not an image"),
    ("face.jpg", b"not a picture\n", 422, "face.jpg: not an image"),
    ("face.jpg", b"", 422, "empty file"),
    ("clip.mp4", b"\x00\x00\x00\x18ftypmp42", 415, "video"),
    (None, b"", 422, "field named 'file'"),
])
def test_unusable_upload_is_a_clear_json_error(server, name, data, status, words):
    if name == "clip.mp4" and json.loads(get(server.url + "/health")[1])["videos"]:
        pytest.skip("this predictor reads videos")
    code, answer = post(server.url + "/predict", name, data)
    assert code == status and words in answer["error"], answer
    assert str(server.tmp) not in answer["error"]  # the user's file name, never the server's temp path


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_oversized_upload_is_413(server, chunked):
    big = np.random.default_rng(0).integers(0, 256, int(1.5e6), dtype=np.uint8).tobytes()
    code, answer = post(server.url + "/predict", "big.png", big, chunked=chunked)
    assert code == 413 and "1 MB" in answer["error"]
    assert get(server.url + "/health")[0] == 200  # and the server still answers


def test_a_photo_without_a_face_is_answered_with_no_faces(server, tmp_path):
    from PIL import Image

    Image.fromarray(np.full((120, 160, 3), 128, np.uint8)).save(tmp_path / "wall.png")
    code, answer = post(server.url + "/predict", "wall.png", (tmp_path / "wall.png").read_bytes())
    assert code == 200 and answer["faces"] == [] and answer["error"] == "wall.png: no face found"
    assert answer["rows"][0]["face"] == -1


def test_video_upload_gives_rows_per_frame(server, tmp_path):
    from aullava.serve.app import reads_videos

    if not reads_videos():
        pytest.skip("the predictor does not read videos yet (no aullava.faces.video_frames)")
    import cv2

    face = cv2.imread(str(EXAMPLE))
    writer = cv2.VideoWriter(str(tmp_path / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10,
                             (face.shape[1], face.shape[0]))
    for _ in range(5):
        writer.write(face)
    writer.release()
    code, answer = post(server.url + "/predict?formats=binary", "clip.mp4", (tmp_path / "clip.mp4").read_bytes())
    assert code == 200 and answer["kind"] == "video", answer
    assert {"frame", "timestamp", "face_id"} <= set(answer["columns"])
    assert len([r for r in answer["rows"] if r["face"] >= 0]) == 5 and answer["rows"][0]["file"] == "clip.mp4"


def _clip(path: Path, frames: int, fps: int = 10) -> bytes:
    import cv2

    face = cv2.imread(str(EXAMPLE))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (face.shape[1], face.shape[0]))
    for i in range(frames):
        writer.write(np.roll(face, i, axis=1))
    writer.release()
    return path.read_bytes()


def test_video_limits_and_a_video_that_is_not_one_are_4xx(tmp_path, tiny_checkpoint):
    """Issue 31: no limit on frames or duration; a non-video '.mp4' answered 200 with the error inside the rows."""
    running = Server(tmp_path, "--model", str(tiny_checkpoint), "--max-video-seconds", "2",
                     "--max-video-frames", "15")
    try:
        running.wait_ready()
        code, answer = post(running.url + "/predict?formats=binary", "long.mp4", _clip(tmp_path / "a.mp4", 30))
        assert code == 413 and "3.0 s of video" in answer["error"] and "--max-video-seconds" in answer["error"]
        code, answer = post(running.url + "/predict?formats=binary", "many.mp4", _clip(tmp_path / "b.mp4", 18, 30))
        assert code == 413 and "18 frames" in answer["error"]
        code, answer = post(running.url + "/predict", "notes.mp4", b"these are not video frames" * 50)
        assert code == 422 and answer["error"].startswith("notes.mp4")
        health = json.loads(get(running.url + "/health")[1])
        assert health["max_video_seconds"] == 2 and health["max_video_frames"] == 15
    finally:
        running.stop()


def test_a_photo_sent_during_a_video_is_answered_before_the_video(tmp_path, tiny_checkpoint):
    """Loopback load test: a photo posted while a long video is read goes between two chunks of the video (it used
    to wait for the whole video: 72 s behind a 100-frame clip)."""
    import threading

    running = Server(tmp_path, "--model", str(tiny_checkpoint))
    try:
        running.wait_ready()
        clip = _clip(tmp_path / "clip.mp4", 120)
        finished: dict[str, float] = {}

        def send_video():
            post(running.url + "/predict", "clip.mp4", clip)
            finished["video"] = time.monotonic()

        video = threading.Thread(target=send_video)
        video.start()
        time.sleep(1.5)  # the video is being read
        started = time.monotonic()
        code, answer = post(running.url + "/predict", "face.png", EXAMPLE.read_bytes())
        finished["photo"] = time.monotonic()
        video.join()
        assert code == 200 and answer["rows"][0]["success"] == 1
        assert finished["photo"] < finished["video"], finished  # not queued behind the whole video
        print(f"photo latency during a 120-frame video: {finished['photo'] - started:.2f} s; video done "
              f"{finished['video'] - finished['photo']:.2f} s later")
    finally:
        running.stop()


def test_turns_let_a_waiting_photo_go_before_the_next_video_chunk():
    from aullava.serve.app import Turns

    turns, order = Turns(), []
    import threading

    chunk_running = threading.Event()

    def video():
        for k in range(3):
            with turns.video_chunk():
                chunk_running.set()
                order.append(f"chunk{k}")
                time.sleep(0.2)

    worker = threading.Thread(target=video)
    worker.start()
    chunk_running.wait()
    with turns.photo():
        order.append("photo")
    worker.join()
    assert order.index("photo") == 1  # right after the chunk that was running


def test_nothing_of_an_upload_is_left_on_disk(server):
    """Runs after the uploads above: the working folder stays empty, and TMPDIR holds what it held at start."""
    assert post(server.url + "/predict", EXAMPLE.name, EXAMPLE.read_bytes(), {"formats": "binary"})[0] == 200
    assert list(server.cwd.iterdir()) == []
    assert sorted(p.name for p in server.tmp.iterdir()) == server.tmp_at_start


def test_busy_port_and_bad_options_stop_before_the_model_loads(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        started = time.monotonic()
        assert main(["serve", "--port", str(port)]) == 2
        assert time.monotonic() - started < 5
    assert "cannot listen there" in capsys.readouterr().err
    assert main(["serve", "--model", "/no/such/model", "--port", str(_free_port())]) == 2
    assert "--model /no/such/model: not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        main(["serve", "--max-upload-mb", "0"])
    assert stop.value.code == 2


@pytest.mark.e2e
def test_default_model_over_http(tmp_path):
    """One binary answer from the shipped model: the smiling example face shows AU12 (lip corner puller), and the
    served p(present) of every AU is the in-process Predictor's for the same upload (calibration included)."""
    running = Server(tmp_path)
    try:
        running.wait_ready()
        assert json.loads(get(running.url + "/health")[1])["trained"] is True
        code, answer = post(running.url + "/predict?formats=binary", EXAMPLE.name, EXAMPLE.read_bytes())
    finally:
        running.stop()
    assert code == 200 and len(answer["faces"]) == 1
    assert answer["rows"][0]["AU12_c"] == 1
    from aullava.inference import Predictor

    local = Predictor().predict([EXAMPLE], formats=["binary"])[0].faces[0].expected["binary"]
    assert np.allclose(answer["faces"][0]["expected"]["binary"], local, atol=1e-5)
