"""The contract an srdeploy ONNX model carries in its ``metadata_props`` (all values strings).

The exporter (``srdeploy.export``) writes these keys; the runtime reads them and refuses a model
without them. Keep this module free of heavy imports: it is the single definition both sides use.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field

# metadata_props keys
KEY_FORMAT = "srdeploy.format"            # "srdeploy.sr-model/1"
KEY_SCALE = "srdeploy.scale"              # "4"
KEY_INPUT_RANGE = "srdeploy.input_range"  # "0,1"
KEY_OUTPUT_RANGE = "srdeploy.output_range"  # "0,1"
KEY_CHANNEL_ORDER = "srdeploy.channel_order"  # "RGB"
KEY_LAYOUT = "srdeploy.layout"            # "NCHW"
KEY_RADIUS = "srdeploy.receptive_radius"  # LR pixels, e.g. "40"
KEY_ARCH = "srdeploy.arch"                # "SRResNet"
KEY_ARCH_KWARGS = "srdeploy.arch_kwargs"  # JSON object
KEY_CHECKPOINT_SHA256 = "srdeploy.checkpoint_sha256"
KEY_VERSION = "srdeploy.version"
KEY_PRECISION = "srdeploy.precision"      # "fp32" | "fp16" | "int8" (weights/compute; I/O stays float32)
KEY_FLOPS = "srdeploy.flops_per_pixel"    # FLOPs per LR input pixel, counted from the graph at export
# Measured at export (srdeploy.export.margin): the smallest tile margin whose tiled output stays
# within 0.5/255 of the whole image; the runtime's default --tile-pad. Absent: the radius rule.
KEY_TILE_MARGIN = "srdeploy.tile_margin"          # LR pixels, e.g. "12"
KEY_SIZE_MULTIPLE = "srdeploy.size_multiple"      # input sides must be a multiple of this; the tiler pads
KEY_MIN_SIZE = "srdeploy.min_size"                # smallest input side; the tiler pads smaller images
FORMAT = "srdeploy.sr-model/1"

INPUT_NAME = "lr"   # float32 (N, 3, H, W), RGB in [0, 1] (N x 1 x H x W for a GRAY model)
OUTPUT_NAME = "sr"  # float32 (N, 3, scale*H, scale*W), RGB in [0, 1]

REQUIRED_KEYS = (KEY_FORMAT, KEY_SCALE, KEY_INPUT_RANGE, KEY_OUTPUT_RANGE, KEY_CHANNEL_ORDER,
                 KEY_LAYOUT, KEY_RADIUS)

# Sane bounds for the values a model file claims (metadata is input like any other file: a
# receptive radius of 10**9 became a 300,000,000-pixel tile margin, scale 0 failed only after
# inference). Super-resolution models scale by 1 (restoration) to 8; 16 leaves room. The radius is
# in LR pixels; SRResNet x4 has 40, and past 1024 (budget.MAX_TILE) a margin is larger than any
# tile the runtime chooses. A radius is also checked against the graph's own receptive field
# when the model opens (srdeploy.runtime.contract).
MAX_SCALE = 16
MAX_RECEPTIVE_RADIUS = 1024
MAX_SIZE_REQUIREMENT = 1024  # size multiple / minimum side: a window of 1024 LR pixels is already large
MAX_RANGE = 65535.0  # |range ends|: 16-bit pixel values at most
# What the runtime feeds (a BGR model would be fed the wrong order); GRAY: a 1-channel model (input
# and output N x 1 x H x W).
CHANNEL_ORDERS = ("RGB", "GRAY")
LAYOUTS = ("NCHW",)
PRECISIONS = ("fp32", "fp16", "bf16", "int8")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file (model identity in metadata, engine sidecars and benchmark results)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class MetadataError(ValueError):
    """A model file lacks (or has malformed) srdeploy metadata."""


@dataclass(frozen=True)
class ModelInfo:
    """What a runtime needs to know about an SR model, parsed from its metadata."""

    scale: int
    receptive_radius: int
    input_range: tuple[float, float] = (0.0, 1.0)
    output_range: tuple[float, float] = (0.0, 1.0)
    channel_order: str = "RGB"
    layout: str = "NCHW"
    arch: str = ""
    arch_kwargs: dict = field(default_factory=dict)
    checkpoint_sha256: str = ""
    version: str = ""
    precision: str = "fp32"
    flops_per_pixel: float = 0.0  # 0 = not recorded (models exported before the key existed)
    tile_margin: int | None = None  # measured default tile margin (None = not measured: the radius rule)
    size_multiple: int = 1
    min_size: int = 1

    @property
    def channels(self) -> int:
        """Image channels the model takes and returns (1 for GRAY, else 3)."""
        return 1 if self.channel_order == "GRAY" else 3

    def to_props(self) -> dict[str, str]:
        """As ONNX ``metadata_props`` (string values)."""
        return {
            KEY_FORMAT: FORMAT,
            KEY_SCALE: str(self.scale),
            KEY_INPUT_RANGE: f"{self.input_range[0]:g},{self.input_range[1]:g}",
            KEY_OUTPUT_RANGE: f"{self.output_range[0]:g},{self.output_range[1]:g}",
            KEY_CHANNEL_ORDER: self.channel_order,
            KEY_LAYOUT: self.layout,
            KEY_RADIUS: str(self.receptive_radius),
            KEY_ARCH: self.arch,
            KEY_ARCH_KWARGS: json.dumps(self.arch_kwargs, sort_keys=True),
            KEY_CHECKPOINT_SHA256: self.checkpoint_sha256,
            KEY_VERSION: self.version,
            KEY_PRECISION: self.precision,
            **({KEY_FLOPS: f"{self.flops_per_pixel:.8g}"} if self.flops_per_pixel else {}),
            **({KEY_TILE_MARGIN: str(self.tile_margin)} if self.tile_margin is not None else {}),
            **({KEY_SIZE_MULTIPLE: str(self.size_multiple)} if self.size_multiple != 1 else {}),
            **({KEY_MIN_SIZE: str(self.min_size)} if self.min_size != 1 else {}),
        }

    @classmethod
    def from_props(cls, props: dict[str, str], source: str = "model") -> "ModelInfo":
        """Parse ``metadata_props``; a missing or malformed key raises MetadataError saying how to fix it."""
        missing = [k for k in REQUIRED_KEYS if k not in props]
        if missing:
            raise MetadataError(
                f"{source}: not an srdeploy model: metadata_props lack {', '.join(missing)}. Export it with "
                "`srdeploy export CHECKPOINT -o model.onnx`, or add the keys to an existing ONNX file with "
                "srdeploy.export.onnx_export.add_metadata(path, ModelInfo(scale=..., receptive_radius=...)).")
        if props[KEY_FORMAT] != FORMAT:
            raise MetadataError(f"{source}: metadata format {props[KEY_FORMAT]!r} is not {FORMAT!r}; re-export it")
        try:
            def rng(v: str) -> tuple[float, float]:
                lo, hi = (float(x) for x in v.split(","))
                return lo, hi

            info = cls(
                scale=int(props[KEY_SCALE]),
                receptive_radius=int(props[KEY_RADIUS]),
                input_range=rng(props[KEY_INPUT_RANGE]),
                output_range=rng(props[KEY_OUTPUT_RANGE]),
                channel_order=props[KEY_CHANNEL_ORDER],
                layout=props[KEY_LAYOUT],
                arch=props.get(KEY_ARCH, ""),
                arch_kwargs=json.loads(props.get(KEY_ARCH_KWARGS) or "{}"),
                checkpoint_sha256=props.get(KEY_CHECKPOINT_SHA256, ""),
                version=props.get(KEY_VERSION, ""),
                precision=props.get(KEY_PRECISION, "fp32"),
                flops_per_pixel=float(props.get(KEY_FLOPS) or 0.0),
                tile_margin=int(props[KEY_TILE_MARGIN]) if props.get(KEY_TILE_MARGIN) else None,
                size_multiple=int(props.get(KEY_SIZE_MULTIPLE) or 1),
                min_size=int(props.get(KEY_MIN_SIZE) or 1),
            )
        except (ValueError, TypeError, RecursionError) as exc:  # RecursionError: deeply nested JSON
            raise MetadataError(f"{source}: malformed srdeploy metadata ({exc}); re-export the model") from exc
        info.check(source)
        return info

    def check(self, source: str = "model") -> None:
        """Raise MetadataError (naming ``source`` and the key) for a value outside its sane range.

        Args:
            source: the model file, for the message.
        """
        def bad(key: str, value, want: str) -> MetadataError:
            return MetadataError(f"{source}: metadata {key}={value!r} is not {want}; the file is damaged or was "
                                 "not written by srdeploy export: re-export the model")

        if not 1 <= self.scale <= MAX_SCALE:
            raise bad(KEY_SCALE, self.scale, f"an integer scale from 1 to {MAX_SCALE}")
        if not 0 <= self.receptive_radius <= MAX_RECEPTIVE_RADIUS:
            raise bad(KEY_RADIUS, self.receptive_radius, f"a radius from 0 to {MAX_RECEPTIVE_RADIUS} LR pixels")
        for key, (lo, hi) in ((KEY_INPUT_RANGE, self.input_range), (KEY_OUTPUT_RANGE, self.output_range)):
            if not (math.isfinite(lo) and math.isfinite(hi) and -MAX_RANGE <= lo < hi <= MAX_RANGE):
                raise bad(key, f"{lo:g},{hi:g}", f"a value range lo,hi with lo < hi, both within +-{MAX_RANGE:g}")
        if self.channel_order not in CHANNEL_ORDERS:
            raise bad(KEY_CHANNEL_ORDER, self.channel_order, " or ".join(CHANNEL_ORDERS))
        if self.layout not in LAYOUTS:
            raise bad(KEY_LAYOUT, self.layout, " or ".join(LAYOUTS))
        if self.precision not in PRECISIONS:
            raise bad(KEY_PRECISION, self.precision, "one of " + ", ".join(PRECISIONS))
        if not isinstance(self.arch_kwargs, dict):
            raise bad(KEY_ARCH_KWARGS, self.arch_kwargs, "a JSON object")
        if not (math.isfinite(self.flops_per_pixel) and self.flops_per_pixel >= 0):
            raise bad(KEY_FLOPS, self.flops_per_pixel, "a finite count >= 0")
        if self.tile_margin is not None and not 0 <= self.tile_margin <= self.receptive_radius:
            raise bad(KEY_TILE_MARGIN, self.tile_margin, f"a margin from 0 to the receptive radius {self.receptive_radius}")
        for key, value in ((KEY_SIZE_MULTIPLE, self.size_multiple), (KEY_MIN_SIZE, self.min_size)):
            if not 1 <= value <= MAX_SIZE_REQUIREMENT:
                raise bad(key, value, f"a size from 1 to {MAX_SIZE_REQUIREMENT} pixels")
