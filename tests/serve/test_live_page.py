"""The page's live mode in real headless Chromium: its fake camera plays a clip of the example face alternating
neutral and smiling; the page must analyse frame after frame through the server and its AU bars must change."""

from __future__ import annotations

import pytest

from conftest import load_script
from test_serve import Server

live_page = load_script("live_page")


@pytest.fixture(scope="module")
def browser():
    paths = live_page.chromium_paths()
    if paths is None:
        pytest.skip("chromium and chromedriver not installed (scripts/setup-env.sh test installs them where apt "
                    "has them: apt-get install -y chromium chromium-driver)")
    pytest.importorskip("selenium", reason="selenium (the test extra) not installed")
    return paths


@pytest.mark.e2e
def test_live_camera_frames_are_analysed_one_after_another_and_the_bars_move(browser, tmp_path):
    """On the default model: a tiny random one answers the same for every face, so its bars could not move."""
    server = Server(tmp_path)
    try:
        server.wait_ready()
        clip = live_page.fake_camera_clip(tmp_path / "camera.y4m")
        report = live_page.drive(server.url + "/", clip, min_frames=6, timeout=120, paths=browser,
                                 screenshot=tmp_path / "live.png")
    finally:
        server.stop()
    assert report["errors"] == []
    assert report["frames"] >= 6, report
    assert report["bar_states"] >= 2, report  # the p(present) bars changed between answers
    assert "frames analysed" in report["rate_text"] and "frames/s" in report["rate_text"]
    assert (tmp_path / "live.png").stat().st_size > 10_000
