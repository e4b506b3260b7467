"""The tile margin each model needs, measured at export (``srdeploy.tile_margin`` in the metadata).

The receptive radius gives tiled output exactly equal to the whole image, but a trained network
depends very weakly on far context: the bundled SRResNet (radius 40) needs a margin of 12 for a
deviation of 0.2/255. A rule of thumb fitted on one architecture (0.3 x radius) is wrong for
others: a 23-block RRDBNet has a radius of about 350 LR pixels, so the rule triples its compute,
and a model that mixes context differently could need more. So the margin is measured per model:

* the model runs tiled against its whole-image output, on the calibration images, for
  increasing margins. The tile is small (``TILE``, at most a third of an image side) so that
  every image has interior tiles: a tile at an image border is shifted inwards and sees more
  context than the margin on its inner side, so images only two tiles wide would under-measure.
  The deviation at a seam depends on the margin, not on the tile size (the worst pixel sits at a
  core edge with exactly the margin as context), so the result holds for the default tile too;
* the smallest margin whose maximum deviation over all images and channels is below
  ``THRESHOLD`` (0.5/255, half a level of an 8-bit output) is recorded with the measured
  curve; the runtime uses it as the model's default ``--tile-pad``;
* margins stop at the receptive radius, where tiling is exact by construction, or where every
  input fits in one window (no seam left: a zero deviation there would prove nothing), and then
  the radius is recorded: a deep model (RRDBNet) needs inputs larger than its margin to measure.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

THRESHOLD = 0.5 / 255
TILE = 32
MARGINS = (0, 2, 4, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 256, 320, 384)
KEY_MARGIN_CURVE = "srdeploy.tile_margin_curve"  # JSON: tile, threshold, images, [[margin, max dev x255], ...]


@dataclass(frozen=True)
class MarginResult:
    """A measured tile margin.

    Attributes:
        margin: the smallest margin below ``threshold`` (the radius when none below it was).
        curve: (margin, largest deviation in 1/255 units) for each margin measured.
        tile: the tile core used.
        threshold: the deviation bound, in [0, 1] units.
        images: the calibration inputs, by name.
    """

    margin: int
    curve: tuple[tuple[int, float], ...]
    tile: int
    threshold: float
    images: tuple[str, ...]

    def to_json(self) -> str:
        d = asdict(self)
        d["curve"] = [[m, round(v, 4)] for m, v in self.curve]
        return json.dumps(d, sort_keys=True)

    def lines(self) -> list[str]:
        """The curve as printed at export."""
        out = [f"tile margin: tiled (tile {self.tile}) vs whole image on {len(self.images)} calibration inputs, "
               "max |difference| in 1/255:"]
        for m, v in self.curve:
            mark = f"  <- smallest below {self.threshold * 255:g}/255: the default --tile-pad" if m == self.margin \
                else ""
            out.append(f"  margin {m:4d}: {v:8.3f}{mark}")
        return out


def margins_up_to(radius: int) -> list[int]:
    """The margins to try: ``MARGINS`` below the radius, then the radius itself."""
    return [m for m in MARGINS if m < radius] + [radius]


def measure_margin(session, inputs: list[np.ndarray], names: list[str], *, radius: int,
                   whole: Callable[[np.ndarray], np.ndarray] | None = None, tile: int = TILE,
                   threshold: float = THRESHOLD, log: Callable[[str], None] = lambda s: None) -> MarginResult:
    """Measure the smallest tile margin whose tiled output stays within ``threshold`` of the whole image.

    Args:
        session: an open runtime Session of the exported model (tiles run through it, as deployed).
        inputs: calibration inputs, float32 1 x C x H x W in [0, 1].
        names: their names (recorded).
        radius: the model's receptive radius (the last margin tried: exact).
        whole: whole-image reference for one C x H x W input (default: the session in one pass;
            a fixed-window model passes its PyTorch model).
        tile: tile core in LR pixels (a fixed-window session reduces it to its window).
        threshold: deviation bound in [0, 1] units.
        log: progress printer.
    """
    from srdeploy.runtime.tiling import axis_window, tiled_infer

    if whole is None:
        def whole(x: np.ndarray) -> np.ndarray:
            return session.infer(x[None])[0]
    images = [x[0] for x in inputs]
    refs = [whole(x) for x in images]
    curve: list[tuple[int, float]] = []
    chosen = radius
    for m in margins_up_to(radius):
        worst, seams = 0.0, 0
        for x, ref in zip(images, refs):
            t = max(4, min(tile, min(x.shape[1:]) // 3))  # interior tiles in every image
            if m < radius and all(axis_window(n, t, m)[0] >= n for n in x.shape[1:]):
                continue  # the window holds the whole image: no seam left to measure at this margin
            seams += 1
            y = tiled_infer(session, x, tile=t, tile_pad=m)
            # Compare in the deployed range: outputs are clamped to [0, 1] by the model.
            worst = max(worst, float(np.abs(y - ref).max()))
        if not seams:  # a zero deviation here would say nothing: larger inputs would (--margin-images)
            log(f"  margin {m:4d}: every calibration input fits in one window, so no seam is left to measure; "
                f"using the receptive radius {radius} (larger inputs, --margin-images DIR, measure further)")
            break
        curve.append((m, worst * 255))
        log(f"  margin {m:4d}: max deviation {worst * 255:.3f}/255")
        if worst < threshold:
            chosen = m
            break
    return MarginResult(margin=chosen, curve=tuple(curve), tile=tile, threshold=threshold, images=tuple(names))
