"""The page at ``GET /`` in headless Chromium (Debian's package, driven by Playwright's Python API):
pick a file, wait, download; the downloaded bytes are the API's."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import pytest

pytest.importorskip("starlette")
httpx = pytest.importorskip("httpx")
sync_api = pytest.importorskip("playwright.sync_api")

from _serve import start  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    from _models import export_spread_model

    return export_spread_model(tmp_path_factory.mktemp("page_model") / "spread_x2.onnx", scale=2)


@pytest.mark.slow
def test_page_upload_slider_and_download_equal_the_api(model, set5, tmp_path):
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    src = tmp_path / "bird crop.png"
    cv2.imwrite(str(src), cv2.imread(str(set5 / "bird.png"))[90:150, 40:120])
    with start(model, tiling={"tile": 32}) as srv:
        page_response = httpx.get(srv.url + "/")
        api = httpx.post(srv.url + "/v1/upscale", content=src.read_bytes(), timeout=60)
        assert api.status_code == 200
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                requests = []
                page.on("request", lambda r: requests.append(r.url))
                errors = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.goto(srv.url + "/")
                page.set_input_files("#file", str(src))
                page.wait_for_selector("#download", state="visible", timeout=60_000)
                page.wait_for_selector("#compare", state="visible", timeout=60_000)  # the slider's images
                with page.expect_download() as info:
                    page.click("#download")
                downloaded = Path(info.value.path()).read_bytes()
                name = info.value.suggested_filename
                # the bicubic side was drawn at the model's size: the slider compares like with like
                size = page.evaluate("[document.getElementById('bicubic').width, "
                                     "document.getElementById('model').naturalWidth]")
                page.fill("#slider", "10")
                clip = page.evaluate("document.getElementById('model').style.clipPath")
            finally:
                browser.close()
    assert downloaded == api.content
    assert name == "bird crop_upscaled.png"
    assert size == [160, 160] and clip == "inset(0px 0px 0px 10%)"
    assert not errors, errors
    assert all(u.startswith(srv.url) or u.startswith("blob:") for u in requests), requests  # no external assets
    assert "default-src 'none'" in page_response.headers["content-security-policy"]
