"""The decode | infer | encode pipeline that both video encoders run (``run_pipeline``).

Three stages run concurrently, joined by bounded queues, so memory stays flat however long the
video is:

    reader thread:   frames from the decoder, in groups of ``batch`` whole frames -> the model's
                     float32 NCHW input (RGB contract) -> queue
    calling thread:  the session only (``session.infer``; frames larger than a tile go one by one
                     through ``Upscaler.upscale``, tiled) -> queue
    writer thread:   model output -> uint8 frames -> ``write`` (the encoder)

Decoding, colour conversion, encoding and ONNX Runtime / TensorRT inference all release the
GIL, so the stages overlap and end-to-end fps approaches model-only fps (``srdeploy bench
--video`` measures the ratio). Inference stays on the calling thread so Ctrl-C
(KeyboardInterrupt, delivered to the main thread) stops it promptly; the other threads are
then told to stop and joined before ``run_pipeline`` returns or raises.

Frames are BGR (OpenCV, ffmpeg's bgr24) or RGB; the channels are reordered to the model's RGB
as each group is converted to float and back as the output is converted to uint8, which saves
two full-frame copies.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterable, Iterator

import numpy as np

from ..pixels import PixelMap

_END = object()


def upscale_frames(upscaler, frames: list[np.ndarray], *, order: str = "RGB") -> list[np.ndarray]:
    """Upscale uint8 HWC frames of one size, stacked into one inference call where possible.

    Frames that each fit in one tile (or ``tile`` 0) are stacked into (N, 3, H, W) batches of up
    to ``upscaler.batch`` frames and go through ``session.infer`` directly, with exactly the
    Upscaler's pre/post-processing arithmetic (a test checks equality with per-frame
    ``Upscaler.upscale``). Larger frames go one by one through ``Upscaler.upscale`` (tiled), whose
    ``batch`` then groups tiles.

    Args:
        upscaler: a ``srdeploy.runtime.upscale.Upscaler``.
        frames: uint8 (H, W, 3) arrays, all the same size.
        order: channel order of ``frames`` and of the results, "RGB" or "BGR" (OpenCV); the
            model always sees its RGB contract.
    """
    if not frames:
        return []
    h, w = frames[0].shape[:2]
    chunk = _stack_size(upscaler, h, w)
    if len(frames) == 1 or chunk <= 1 or any(f.shape != frames[0].shape or f.dtype != np.uint8 or f.ndim != 3
                                             or f.shape[2] != 3 for f in frames):
        return [upscaler.upscale(f, order=order) for f in frames]
    out: list[np.ndarray] = []
    for i in range(0, len(frames), chunk):
        out.extend(_infer_stack(upscaler.session, frames[i:i + chunk], order))
    return out


def _stack_size(upscaler, h: int, w: int, batch: int | None = None) -> int:
    """How many whole frames one inference call may take; 0 = frames must go through the tiler.

    Args:
        upscaler: the Upscaler (its tile settings decide whether a frame is one tile).
        h, w: frame size.
        batch: frames wanted per call (default: ``upscaler.batch``); capped by the session's
            batch range (a TensorRT profile).
    """
    plan = upscaler.plan(h, w, streamed=False)  # a whole output frame is held (and queued)
    if plan.num_tiles != 1 or plan.notes or plan.window != (h, w) or plan.feather:
        return 0
    if upscaler.session.input_spec.channels != 3:  # a gray model: the Upscaler runs colour channel by channel
        return 0
    lo, hi = upscaler.session.input_spec.batch
    n = upscaler.batch if batch is None else batch
    n = n if hi is None else min(n, hi)
    return n if n >= lo else 0


def _preprocess(info, frames: list[np.ndarray], order: str) -> np.ndarray:
    """uint8 HWC frames -> float32 (N, 3, H, W) in the model's input range, RGB (``PixelMap``,
    the Upscaler's own conversion, so stacked results equal per-frame ones)."""
    rgb = [2, 1, 0] if order == "BGR" else [0, 1, 2]  # model channel k <- frame channel rgb[k]
    return PixelMap(info, np.uint8).to_model(np.stack(frames)[..., rgb].transpose(0, 3, 1, 2))


def _postprocess(info, y: np.ndarray, order: str) -> list[np.ndarray]:
    """float32 (N, 3, H, W) model output -> uint8 HWC frames in ``order``."""
    rgb = [2, 1, 0] if order == "BGR" else [0, 1, 2]
    y = PixelMap(info, np.uint8).from_model(y)
    y = y.transpose(0, 2, 3, 1)[..., rgb]  # rgb is its own inverse (identity or a swap)
    return [np.ascontiguousarray(f) for f in y]


def _infer_stack(session, frames: list[np.ndarray], order: str) -> list[np.ndarray]:
    return _postprocess(session.info, session.infer(_preprocess(session.info, frames, order)), order)


def run_pipeline(upscaler, frames: Iterable[np.ndarray], write: Callable[[np.ndarray], None], *, batch: int = 1,
                 on_frame: Callable[[int], None] | None = None, order: str = "BGR",
                 queue_groups: int | None = None) -> int:
    """Upscale ``frames`` into ``write`` with decoding, inference and encoding overlapped.

    Used by both encoders (OpenCV writer in ``media.video``, ffmpeg segments in
    ``media.segments``). On any error or interrupt both threads stop before this returns.

    Args:
        upscaler: ``Upscaler`` on an open session.
        frames: uint8 (H, W, 3) frames of one size, in ``order``; iterated on the reader thread.
        write: receives each upscaled uint8 frame, in order, on the writer thread.
        batch: frames per inference call.  on_frame: called with 1 after each ``write``.
        order: "BGR" or "RGB" (channel order of frames and results).
        queue_groups: groups buffered between stages (default ``max(2, 8 // batch)``).

    Returns:
        Frames written.
    """
    it = iter(frames)
    try:
        first = next(it)
    except StopIteration:
        return 0
    return _Pipeline(upscaler, first, it, write, batch=batch, on_frame=on_frame, order=order,
                     queue_groups=queue_groups).run()


class _Failed:
    """An exception raised on the reader thread, handed to the calling thread through the queue."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class _Pipeline:
    """One ``run_pipeline`` call: the queues, the stop flag and the three stages' loops."""

    def __init__(self, upscaler, first: np.ndarray, rest: Iterator[np.ndarray], write: Callable[[np.ndarray], None],
                 *, batch: int, on_frame: Callable[[int], None] | None, order: str, queue_groups: int | None) -> None:
        h, w = first.shape[:2]
        chunk = _stack_size(upscaler, h, w, batch)
        self.upscaler, self.first, self.rest, self.write = upscaler, first, rest, write
        self.on_frame, self.order = on_frame, order
        self.stacked = chunk >= 1  # whole frames stacked into one call, else one by one through the tiler
        self.group = chunk if self.stacked else 1
        qsize = queue_groups or max(2, 8 // self.group)
        self.q_in: queue.Queue = queue.Queue(maxsize=qsize)
        self.q_out: queue.Queue = queue.Queue(maxsize=qsize)
        self.stop = threading.Event()
        self.errors: list[BaseException] = []  # raised on the writer thread
        self.written = 0

    def run(self) -> int:
        threads = [threading.Thread(target=self._reader, name="srdeploy-decode", daemon=True),
                   threading.Thread(target=self._writer, name="srdeploy-encode", daemon=True)]
        for t in threads:
            t.start()
        try:
            self._infer()
            threads[1].join()
            if self.errors:
                raise self.errors[0]
        except BaseException:
            self.stop.set()
            _drain(self.q_in)
            _drain(self.q_out)
            raise
        finally:
            for t in threads:
                t.join()
        return self.written

    def _emit(self, group_frames: list[np.ndarray]) -> bool:
        info = self.upscaler.session.info
        item = ("x", _preprocess(info, group_frames, self.order)) if self.stacked else ("frames", group_frames)
        return _put(self.q_in, item, self.stop)

    def _reader(self) -> None:
        try:
            pending = [self.first]
            for frame in self.rest:
                if self.stop.is_set():
                    return
                if len(pending) == self.group:
                    if not self._emit(pending):
                        return
                    pending = []
                pending.append(frame)
            if pending and not self.stop.is_set() and not self._emit(pending):
                return
            _put(self.q_in, _END, self.stop)
        except BaseException as exc:  # handed to the calling thread
            _put(self.q_in, _Failed(exc), self.stop)

    def _infer(self) -> None:
        """The calling thread: the session only, group after group, until the reader's end mark."""
        upscaler = self.upscaler
        while True:
            try:
                item = self.q_in.get(timeout=0.1)
            except queue.Empty:
                if self.errors:
                    raise self.errors[0]
                continue
            if item is _END:
                break
            if isinstance(item, _Failed):
                raise item.exc
            if self.errors:
                raise self.errors[0]
            kind, data = item
            out = ("y", upscaler.session.infer(data)) if kind == "x" else \
                ("frames", [upscaler.upscale(f, order=self.order) for f in data])
            if not _put(self.q_out, out, self.stop):
                return
        _put(self.q_out, _END, self.stop)

    def _writer(self) -> None:
        info = self.upscaler.session.info
        try:
            while True:
                item = _get(self.q_out, self.stop)
                if item is _END:
                    return
                kind, data = item
                for frame in (_postprocess(info, data, self.order) if kind == "y" else data):
                    self.write(frame)
                    self.written += 1
                    if self.on_frame is not None:
                        self.on_frame(1)
        except BaseException as exc:
            self.errors.append(exc)
            self.stop.set()


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    """Blocking put that gives up when ``stop`` is set (so no thread hangs on a full queue)."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue, stop: threading.Event):
    while True:
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            if stop.is_set():
                return _END


def _drain(q: queue.Queue) -> None:
    while True:
        try:
            q.get_nowait()
        except queue.Empty:
            return
