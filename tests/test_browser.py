"""The web page in a real headless Chromium (Playwright), against a real `ferkit serve` process.

Uses Debian's /usr/bin/chromium (scripts/install-browser.sh installs it), not a browser that
Playwright downloads. Set FERKIT_SCREENSHOTS=DIR to keep the screenshots taken here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_serving import PHOTO, make_checkpoint

from ferkit.classes import CLASSES
from ferkit.serving.process import ServerProcess

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="no /usr/bin/chromium: run scripts/install-browser.sh "
                                       "(Debian's chromium package) for the browser tests")
BASE_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run",
             "--disable-dev-shm-usage"]


def write_y4m(path: Path, frames: int = 12, size: tuple[int, int] = (640, 480)) -> Path:
    """A short YUV4MPEG2 clip of the test photo drifting sideways, for Chromium's fake camera."""
    w, h = size
    face = Image.open(PHOTO).convert("RGB")
    face = face.resize((int(face.width * 0.75), int(face.height * 0.75)))
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F10:1 Ip A1:1 C420jpeg\n".encode())
        for i in range(frames):
            canvas = Image.new("RGB", (w, h), (40, 46, 60))
            x = (w - face.width) // 2 + int(12 * np.sin(i / frames * 2 * np.pi))
            canvas.paste(face, (x, (h - face.height) // 2))
            y, cb, cr = canvas.convert("YCbCr").split()  # full-range BT.601, as C420jpeg wants
            f.write(b"FRAME\n")
            f.write(y.tobytes())
            f.write(cb.resize((w // 2, h // 2), Image.Resampling.BILINEAR).tobytes())
            f.write(cr.resize((w // 2, h // 2), Image.Resampling.BILINEAR).tobytes())
    return path


def keep_screenshot(page, tmp_path: Path, name: str) -> Path:
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    keep = os.environ.get("FERKIT_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        (Path(keep) / name).write_bytes(shot.read_bytes())
    assert shot.stat().st_size > 10_000
    return shot


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ckpt = make_checkpoint(tmp_path_factory.mktemp("browser-model") / "tiny.pt")
    with ServerProcess(ckpt) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright is not installed (pip install playwright)")
    video = write_y4m(tmp_path_factory.mktemp("camera") / "face.y4m")
    args = BASE_ARGS + ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                        f"--use-file-for-fake-video-capture={video}"]
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=args, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 860},
                                  permissions=["camera"], base_url=server.url)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.goto("/")
    pg.wait_for_function("() => document.querySelector('#model-info b') !== null",
                         timeout=30_000)
    yield pg
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def test_page_loads_with_model_info(page):
    assert page.title().startswith("ferkit")
    assert "tiny.pt" in page.inner_text("#model-info")
    assert "shallow-cnn" in page.inner_text("#model-info")
    assert page.is_visible("#dropzone") and not page.is_visible("#panel-webcam")


def test_photo_upload_shows_boxes_labels_and_bars(page, tmp_path):
    page.set_input_files("#file-input", str(PHOTO))
    page.wait_for_selector("#faces .face-card", timeout=60_000)
    cards = page.query_selector_all("#faces .face-card")
    assert len(cards) == 1
    label = cards[0].query_selector(".face-label").inner_text().strip().lower()
    assert label in CLASSES
    rows = cards[0].query_selector_all(".bar-row")
    assert [r.get_attribute("data-class") for r in rows] == list(CLASSES)
    top = cards[0].query_selector(".bar-row.top").get_attribute("data-class")
    assert top == label
    assert re.search(r"\d+%", cards[0].query_selector(".face-score").inner_text())
    assert re.search(r"1 face in grace_hopper\.jpg", page.inner_text("#photo-status"))
    # The canvas shows the photo (not blank) at its own aspect ratio.
    size = page.evaluate("[document.querySelector('#photo-canvas').width,"
                         " document.querySelector('#photo-canvas').height]")
    assert size == [512, 600]
    keep_screenshot(page, tmp_path, "photo.png")


def test_why_button_shows_the_saliency_map_of_a_face(page, tmp_path):
    page.set_input_files("#file-input", str(PHOTO))
    page.wait_for_selector("#faces .face-card .why-btn", timeout=60_000)
    page.click("#faces .face-card .why-btn")
    page.wait_for_function("() => { const i = document.querySelector('#faces .why-img');"
                           " return i !== null && i.complete && i.naturalWidth > 0; }",
                           timeout=60_000)
    # the aligned face beside its map, 144 px each (a data: URL, which the page's CSP allows)
    assert page.evaluate("document.querySelector('#faces .why-img').naturalWidth") == 288
    assert "map of" in page.inner_text("#faces .why-note")
    assert page.inner_text("#faces .why-btn").strip() == "Hide why"
    keep_screenshot(page, tmp_path, "why.png")
    page.click("#faces .face-card .why-btn")
    assert not page.is_visible("#faces .why-out")


def test_undecodable_upload_shows_the_server_error(page, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    page.set_input_files("#file-input", str(bad))
    page.wait_for_selector("#photo-status.error", timeout=30_000)
    text = page.inner_text("#photo-status")
    assert "422" in text and "undecodable_image" in text


def test_webcam_live_labels_fps_and_timeline(page, tmp_path):
    page.click("#tab-webcam")
    assert page.is_visible("#panel-webcam") and not page.is_visible("#panel-photo")
    page.click("#cam-start")
    page.wait_for_selector("#live-faces .face-card", timeout=60_000)
    label = page.inner_text("#live-faces .face-card .face-label").strip().lower()
    assert label in CLASSES
    page.wait_for_function(
        "() => parseFloat(document.querySelector('#fps').textContent) > 0", timeout=60_000)
    assert re.fullmatch(r"\d+\.\d fps", page.inner_text("#fps").strip())
    assert re.fullmatch(r"\d+ ms", page.inner_text("#latency").strip())
    page.wait_for_function("() => state.cam.history.filter(h => h.p).length >= 3",
                           timeout=60_000)
    assert page.evaluate("state.cam.faces.length") == 1
    keep_screenshot(page, tmp_path, "webcam.png")
    page.click("#cam-stop")
    assert page.inner_text("#fps").strip() == "– fps"
    assert page.evaluate("state.cam.stream") is None
