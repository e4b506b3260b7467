"""Helpers for the ffmpeg video tests: test files made by the bundled ffmpeg, an exact copy model, decoding.

The copy model (nearest-neighbour x2 and a channel rotation, out RGB = in GBR) makes the expected
output of any source computable exactly (``reference``): its output covers the input's whole
value range, and any channel-order, offset or frame-order mistake changes it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from srdeploy.runtime.media import ffmpeg as ff

FFMPEG = ff.ffmpeg_exe()


def make(path: Path, *args: str) -> Path:
    """Run the bundled ffmpeg to make a test file (argument list, no shell)."""
    subprocess.run([FFMPEG, "-nostdin", "-v", "error", "-y", *args, f"file:{path}"], check=True)
    return path


def decode(path: Path) -> np.ndarray:
    """Every frame as BGR24, decoded by ffmpeg exactly as the segment decoder does."""
    times = ff.frame_times(ff.probe(path), path.with_name(path.name + ".probe.log"))
    r = subprocess.run([FFMPEG, "-v", "error", "-i", f"file:{path}", "-map", "0:V:0", "-fps_mode", "passthrough",
                        "-f", "rawvideo", "-pix_fmt", "bgr24", "-"], capture_output=True, check=True)
    return np.frombuffer(r.stdout, np.uint8).reshape(-1, times.height, times.width, 3)


def framemd5(path: Path) -> list[str]:
    """ffmpeg's per-frame MD5 of the decoded video (timestamps and sizes included), one line a frame."""
    r = subprocess.run([FFMPEG, "-v", "error", "-i", f"file:{path}", "-map", "0:v:0", "-f", "framemd5", "-"],
                       capture_output=True, text=True, check=True)
    return [ln for ln in r.stdout.splitlines() if ln and not ln.startswith("#")]


def write_copy_model(path: Path, perm: tuple[int, int, int] = (1, 2, 0)) -> Path:
    """The exact test model: nearest-neighbour x2, output channel k = input channel ``perm[k]``.

    Another ``perm`` gives a different model of exactly the same file size.
    """
    import onnx
    from onnx import TensorProto, helper

    from srdeploy.runtime.metadata import ModelInfo

    graph = helper.make_graph(
        [helper.make_node("Resize", ["lr", "", "scales"], ["up"], mode="nearest"),
         helper.make_node("Gather", ["up", "perm"], ["sr"], axis=1)],
        "copy_x2",
        [helper.make_tensor_value_info("lr", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("sr", TensorProto.FLOAT, ["n", 3, "h2", "w2"])],
        [helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2]),
         helper.make_tensor("perm", TensorProto.INT64, [3], list(perm))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for k, v in ModelInfo(scale=2, receptive_radius=1, arch="copy").to_props().items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return path


def reference(path: Path) -> np.ndarray:
    """What the copy model makes of each frame: 2x nearest, channels rotated (BGR arrays)."""
    f = decode(path).repeat(2, axis=1).repeat(2, axis=2)
    return f[..., [2, 0, 1]]  # out R,G,B = in G,B,R; in BGR order: (B,G,R)_out = (R,B,G)_in
