"""The settings of one run: how to tile (``TileSettings``) and what to open (``RunSettings``).

One frozen value, built once (the CLI: ``srdeploy.runtime.cli.settings_from_args``) and passed
whole to ``Upscaler``, the batch workers, the eval, video, bench and the TensorRT-provider shape
profile, so no command carries a flag by hand and none can drop one on the way.

The two defaults that depend on the model or the image are resolved here, and only here:

* the margin: ``tile_pad=None`` is the margin measured for the model at export (metadata
  ``srdeploy.tile_margin``), else ``default_tile_pad(receptive radius)`` (``pad_for``);
* ``tile="auto"``: ``Upscaler.plan`` chooses per image through the memory budget
  (``runtime.budget``); where no image is known yet (a TensorRT shape profile built before the
  session opens) or the model's graph cannot be profiled, it is ``DEFAULT_TILE``
  (``fixed_tile``).

Plain values only (no numpy), so a recipe holding them pickles to another process (a Ray actor).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .open import SessionRecipe

# Chosen by measurement (scripts/bench_tiling.py; docs/runtime.md "Why margin 12"). On the trained
# 16-block SRResNet x4 (radius 40; the bundled model's training run at step 6500, Set5 29.92 dB), max
# deviation from the whole-image output over the 19 Set5 + Set14 images, in 1/255 units, by
# margin: 8 -> 1.96, 10 -> 0.76, 12 -> 0.20, 16 -> 0.005 (step 2000 gave 3.2/0.93/0.19/0.003).
# Compute cost is the tile overhead factor (window area / core area; measured time follows it):
# on a 4000x3000 image, tile 256 costs 1.20x with margin 12 (1.74x with the full radius 40), and
# 256 keeps ONNX Runtime's activation memory inside the 2 GB budget (scripts/bench_memory.py).
DEFAULT_TILE = 256
DEFAULT_MIN_TILE_PAD = 12       # LR pixels: 0.19/255 measured, 5x below the 1/255 goal
DEFAULT_TILE_PAD_FRACTION = 0.3  # 12 / 40 for the paper's model; scales with deeper models
ALPHA_MODES = ("model", "resize")


def default_tile_pad(receptive_radius: int) -> int:
    """Default tile margin (LR pixels) for a model of this receptive radius.

    The receptive radius gives exactly the whole-image result but is generous: a trained
    SRResNet depends very weakly on far context. The default is the measured margin for the
    paper's model (12 of 40, deviation 0.19/255) as a fraction of the radius, at least 12 LR
    pixels, never more than the radius (``--tile-pad`` RADIUS for bit-exact tiling).

    Args:
        receptive_radius: the model's receptive radius in LR pixels (``ModelInfo``).
    """
    return min(receptive_radius, max(DEFAULT_MIN_TILE_PAD, math.ceil(DEFAULT_TILE_PAD_FRACTION * receptive_radius)))


def _count(value, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


@dataclass(frozen=True)
class TileSettings:
    """How images are tiled and upscaled (what ``Upscaler`` takes).

    Attributes:
        tile: tile core size in LR pixels (int, or (height, width)); 0 = whole image in one pass;
            "auto" = per image, the tiling with the least overhead whose predicted peak memory
            fits ``max_memory`` (``runtime.budget``).
        tile_pad: margin in LR pixels; None = the model's measured margin, else ``default_tile_pad``
            of its receptive radius (``pad_for``).
        batch: tiles per inference call (video: frames per call when a frame is one tile).
        feather: blending width between tiles in LR pixels (0 = hard crop; see ``runtime.tiling``).
        alpha: how RGBA alpha is upscaled: "model" (a gray pass) or "resize" (bicubic).
        max_memory: the budget for ``tile="auto"`` in bytes; None = ``budget.default_budget``
            (1 GiB or half the available RAM; on a CUDA device its free memory).
    """

    tile: int | tuple[int, int] | str = "auto"
    tile_pad: int | None = None
    batch: int = 1
    feather: int = 0
    alpha: str = "model"
    max_memory: int | None = None

    def __post_init__(self) -> None:
        tile = tuple(self.tile) if isinstance(self.tile, list) else self.tile  # a JSON round trip gives a list
        object.__setattr__(self, "tile", tile)
        sizes = tile if isinstance(tile, tuple) else (tile,)
        tile_ok = tile == "auto" or (len(sizes) in (1, 2) and all(_count(t, 0) for t in sizes))
        if not tile_ok or not _count(self.batch, 1) or not _count(self.feather, 0) \
                or not (self.tile_pad is None or _count(self.tile_pad, 0)) \
                or not (self.max_memory is None or _count(self.max_memory, 1)) or self.alpha not in ALPHA_MODES:
            raise ValueError(f"tile settings: need tile >= 0 or 'auto', tile_pad >= 0, batch >= 1, feather >= 0, "
                             f"max_memory >= 1 and alpha one of {ALPHA_MODES}; got tile={self.tile!r}, "
                             f"tile_pad={self.tile_pad!r}, batch={self.batch!r}, feather={self.feather!r}, "
                             f"max_memory={self.max_memory!r}, alpha={self.alpha!r}")

    @property
    def auto(self) -> bool:
        """The tile is chosen per image from the memory budget."""
        return self.tile == "auto"

    def pad_for(self, receptive_radius: int, measured: int | None = None) -> int:
        """The margin for a model: ``tile_pad``, else the margin ``measured`` for it at export
        (``ModelInfo.tile_margin``, see ``srdeploy.export.margin``; at most the radius, which is
        exact already), else ``default_tile_pad`` of its receptive radius."""
        if self.tile_pad is not None:
            return self.tile_pad
        if measured is not None:
            return min(measured, receptive_radius)
        return default_tile_pad(receptive_radius)

    def fixed_tile(self) -> int | tuple[int, int]:
        """The tile where none can be chosen per image: ``tile``, or ``DEFAULT_TILE`` for "auto"."""
        return DEFAULT_TILE if self.auto else self.tile  # type: ignore[return-value]


@dataclass(frozen=True)
class RunSettings:
    """What a runtime command runs: the session to open and how to tile.

    Attributes:
        recipe: the ``SessionRecipe`` (model, backend, device, precision, threads, options).
        tiling: the ``TileSettings``.
    """

    recipe: SessionRecipe
    tiling: TileSettings = TileSettings()

    def __post_init__(self) -> None:
        from .open import SessionRecipe  # here, not at the top: open imports backends.options, which imports this

        if not isinstance(self.recipe, SessionRecipe) or not isinstance(self.tiling, TileSettings):
            raise TypeError(f"RunSettings(recipe, tiling) takes a SessionRecipe and a TileSettings, got "
                            f"{type(self.recipe).__name__} and {type(self.tiling).__name__}")

    def pinned(self) -> "RunSettings":
        """The same settings with ``precision="auto"`` resolved now (the tune profile read once), for
        work that opens several sessions: batch workers and Ray Serve replicas then all run the one
        path the driver chose (and its ``note``), never a mix. Other precisions: unchanged."""
        from .open import AUTO

        if self.recipe.precision != AUTO:
            return self
        return replace(self, recipe=self.recipe.resolved())
