"""`srdeploy demo` end to end: every panel shows what its label says, PSNRs are the real ones."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from _models import export_spread_model
from srdeploy.cli import main
from srdeploy.demo import LABEL_HEIGHT, PANEL_GAP
from srdeploy.runtime.media.images import read_image

SCALE, CROP, ZOOM = 4, 32, 2


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return export_spread_model(tmp_path_factory.mktemp("demo") / "spread_x4.onnx", scale=SCALE)


def test_demo_panels_are_lr_bicubic_model_truth(model, set5, tmp_path, capsys):
    from srdeploy.runtime.open import open_session
    from srdeploy.runtime.upscale import Upscaler
    from srdeploy.train.data import imresize, mod_crop
    from srdeploy.train.metrics import psnr

    image = set5 / "bird.png"
    out, sr_file = tmp_path / "demo.png", tmp_path / "sr.png"
    rc = main(["demo", "-i", str(image), "-o", str(out), "--model", str(model), "--crop", str(CROP),
               "--zoom", str(ZOOM), "--save-sr", str(sr_file)])
    text = capsys.readouterr().out
    assert rc == 0, text

    # Independent computation of what each panel must show.
    hr = mod_crop(read_image(image)[0], SCALE)
    lr = imresize(hr, 1.0 / SCALE)
    with open_session(model) as s:
        sr = Upscaler(s).upscale(lr)
    bicubic = imresize(lr, float(SCALE))
    np.testing.assert_array_equal(read_image(sr_file)[0], sr)  # --save-sr is the model's output
    assert sr.std() > 30 and (sr == 0).mean() < 0.01            # a model whose output covers the range

    m = re.search(r"crop at x=(\d+), y=(\d+), (\d+)x\3 HR pixels: LR \| bicubic \| model \| ground truth", text)
    assert m, text
    x, y, size = map(int, m.groups())
    assert size == CROP and x % SCALE == 0 and y % SCALE == 0  # aligned: the LR crop is the same region

    sheet = read_image(out)[0]
    side = size * ZOOM
    assert sheet.shape[1] == 4 * side + 3 * PANEL_GAP and sheet.shape[0] > LABEL_HEIGHT + side

    def zoom(img, f):
        return np.repeat(np.repeat(img, f, axis=0), f, axis=1)

    def panel(k):
        x0 = k * (side + PANEL_GAP)
        return sheet[LABEL_HEIGHT:LABEL_HEIGHT + side, x0:x0 + side]

    lr_crop = lr[y // SCALE:(y + size) // SCALE, x // SCALE:(x + size) // SCALE]
    want = [zoom(lr_crop, SCALE * ZOOM)] + [zoom(im[y:y + size, x:x + size], ZOOM) for im in (bicubic, sr, hr)]
    for k, (name, w) in enumerate(zip(["LR", "bicubic", "model", "ground truth"], want)):
        np.testing.assert_array_equal(panel(k), w, err_msg=f"panel {k} ({name})")
    # the panels really differ (a panel showing the wrong image would be caught above)
    assert np.abs(panel(2).astype(int) - panel(1)).mean() > 10

    # PSNRs: over the whole image (Y, border = scale), as printed and as the caption says
    p_bic, p_sr = psnr(bicubic, hr, crop=SCALE), psnr(sr, hr, crop=SCALE)
    assert f"bicubic {p_bic:.2f} dB, model {p_sr:.2f} dB" in text
    assert "over the whole image" in text and f"enlarged {ZOOM}x" in text
    caption = sheet[LABEL_HEIGHT + side:]
    assert caption.shape[0] >= 18 and (caption < 128).any()  # the caption is drawn in the picture


def test_demo_refuses_to_overwrite(model, set5, tmp_path, capsys):
    out = tmp_path / "demo.png"
    out.write_bytes(b"keep")
    rc = main(["demo", "-i", str(set5 / "bird.png"), "-o", str(out), "--model", str(model)])
    assert rc == 1 and "--overwrite" in capsys.readouterr().err and out.read_bytes() == b"keep"
