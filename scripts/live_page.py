"""Drives the page's live mode (`aullava serve`, "Camera: analyse live") in real headless Chromium whose camera is
a video file (Chromium's fake media-stream switches), and reports what the page did: frames analysed, the frame
rate it showed, and how often the AU bars changed. Used by tests/serve/test_live_page.py; run alone it takes the README's
screenshot with the default model:

    .venv/bin/python scripts/live_page.py --screenshot docs/live-page.png [--url http://127.0.0.1:8000]

Without --url it starts `aullava serve` (the default model) on a free port and stops it after. Needs Debian's
`chromium` and `chromium-driver` and the `selenium` package (the test extra).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np

CLIP_SIZE = (640, 480)
CLIP_FPS = 10


def chromium_paths() -> tuple[str, str] | None:
    """(browser, driver) found on PATH, or None."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def fake_camera_clip(path: Path, seconds: float = 4.0) -> Path:
    """A Y4M video (what Chromium's fake camera reads, looped) of the example face, neutral for one second, then
    smiling (AU6 + AU12 added by the synth's mesh warp) for one second, and so on."""
    from importlib.resources import files

    from aullava.faces.detector import FaceDetector
    from aullava.faces.images import load_image
    from aullava.synth.warp import warp_face

    face = load_image(Path(str(files("aullava").joinpath("resources", "examples", "astronaut.png"))))
    with FaceDetector() as detector:
        landmarks = detector.detect(face)[0].landmarks
    smiling = warp_face(face, landmarks, {"AU6": 1.0, "AU12": 1.0}, gain=2.0).image
    width, height = CLIP_SIZE
    frames = []
    for picture in (face, smiling):
        canvas = np.full((height, width, 3), 96, np.uint8)
        scale = min(width / picture.shape[1], height / picture.shape[0])
        resized = cv2.resize(picture, (round(picture.shape[1] * scale), round(picture.shape[0] * scale)),
                             interpolation=cv2.INTER_AREA)
        y0, x0 = (height - resized.shape[0]) // 2, (width - resized.shape[1]) // 2
        canvas[y0:y0 + resized.shape[0], x0:x0 + resized.shape[1]] = resized
        frames.append(cv2.cvtColor(canvas, cv2.COLOR_RGB2YUV_I420).tobytes())
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{CLIP_FPS}:1 Ip A1:1 C420jpeg\n".encode())
        for i in range(round(seconds * CLIP_FPS)):
            out.write(b"FRAME\n" + frames[(i // CLIP_FPS) % 2])
    return path


def drive(url: str, clip: Path, min_frames: int = 5, timeout: float = 240.0, screenshot: Path | None = None,
          paths: tuple[str, str] | None = None) -> dict:
    """Opens the page, presses the camera button, waits for `min_frames` answered frames (or `timeout`), and
    returns {"frames", "rate_text", "bar_states" (distinct p(present) bar states seen), "errors" (status text when
    it was an error)}; with `screenshot`, saves the page."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    browser, driver_path = paths or chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--window-size=1280,860",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 f"--use-file-for-fake-video-capture={clip}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        driver.get(url)
        deadline = time.monotonic() + timeout
        while not driver.execute_script("return Object.keys(auNames).length") and time.monotonic() < deadline:
            time.sleep(0.2)  # the page has read /health
        driver.find_element(By.ID, "camera").click()
        states, frames = set(), 0
        read = ("return [document.body.dataset.liveFrames || '0', "
                "Array.from(document.querySelectorAll('#live-face .bar.prob .fill')).map(f => f.style.width)"
                ".join(','), document.getElementById('live-rate').textContent, "
                "document.getElementById('status').className, document.getElementById('status').textContent]")
        rate_text, errors = "", []
        while time.monotonic() < deadline:
            count, bars, rate_text, status_class, status = driver.execute_script(read)
            frames = int(count)
            if bars:
                states.add(bars)
            if "error" in status_class and status not in errors:
                errors.append(status)
            if frames >= min_frames and len(states) >= 2:
                break
            time.sleep(0.1)
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(screenshot))
        return {"frames": frames, "rate_text": rate_text, "bar_states": len(states), "errors": errors}
    finally:
        driver.quit()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running `aullava serve` (default: start one with the default model)")
    parser.add_argument("--screenshot", type=Path, help="save the page here (PNG)")
    parser.add_argument("--frames", type=int, default=12, help="frames to wait for (default 12)")
    args = parser.parse_args()
    paths = chromium_paths()
    if paths is None:
        print("error: chromium and chromedriver not found (apt-get install -y chromium chromium-driver)",
              file=sys.stderr)
        return 2
    server = None
    url = args.url
    if url is None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        url = f"http://127.0.0.1:{port}/"
        server = subprocess.Popen([sys.executable, "-m", "aullava.cli", "serve", "--port", str(port)],
                                  stderr=subprocess.DEVNULL)
        for _ in range(300):
            try:
                urllib.request.urlopen(url + "health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
    try:
        with tempfile.TemporaryDirectory() as folder:
            clip = fake_camera_clip(Path(folder) / "camera.y4m")
            report = drive(url, clip, min_frames=args.frames, screenshot=args.screenshot, paths=paths)
    finally:
        if server is not None:
            server.terminate()
            server.wait()
    print(f"{report['frames']} frames analysed; the page said: {report['rate_text']}; "
          f"{report['bar_states']} distinct bar states; errors: {report['errors'] or 'none'}")
    if args.screenshot:
        print(f"wrote {args.screenshot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
