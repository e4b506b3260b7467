"""What one upscale request does, without HTTP: the part a single-process server and every Ray
replica share.

``UpscaleService.upscale(body, query, ticket)`` runs on a worker thread:

1. options (``ext``, ``quality``, ``alpha``, as ``srdeploy upscale`` takes them);
2. the header checks that need no decoding (``media.images.image_header``): empty or unknown
   bytes 415, a declared size over the pixel cap 413 (a decompression bomb never allocates),
   a truncated file 400;
3. a memory reservation from the shared ``MemoryLedger`` (waits in arrival order);
4. decode (``media.images.decode_image``: the same checks and messages as ``upscale``'s reader);
5. the runtime's ``Upscaler`` on a ``TicketSession`` (its tiles go through the scheduler);
6. encode (``media.writers.encode_bands``: the bytes ``upscale`` would write to a file).

So the response is ``srdeploy upscale``'s output file for the same image and flags. Errors are
``HttpError`` with the one-line reason ``upscale`` prints. Nothing a client sends becomes a path:
an upload's file name only labels messages and picks the default output format.
"""

from __future__ import annotations

import io
import math
import re
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping

from ..media.images import (IMAGE_EXTS, ImageTooLargeError, NotAnImageError, check_quality, check_writable,
                            decode_image, image_header, pixel_limit)
from ..settings import ALPHA_MODES
from .config import ServeConfig
from .ledger import MemoryLedger
from .metrics import Metrics
from .scheduler import Cancelled, Scheduler, Ticket, TicketSession

QUERY_KEYS = ("ext", "quality", "alpha")
MEDIA_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
               ".tif": "image/tiff", ".tiff": "image/tiff", ".bmp": "image/bmp",
               ".ppm": "image/x-portable-pixmap", ".pgm": "image/x-portable-graymap",
               ".pnm": "image/x-portable-anymap", ".gif": "image/gif"}
# The output format when neither ?ext= nor the upload's file name gives one: the input's own.
FORMAT_EXT = {"png": ".png", "jpeg": ".jpg", "tiff": ".tif", "webp": ".webp", "bmp": ".bmp", "pnm": ".pnm",
              "gif": ".gif"}
# Channels and bytes per sample a format can decode to (OpenCV, IMREAD_UNCHANGED): the reservation
# made before decoding covers the largest; it shrinks to the exact figure after decoding.
_LAYOUTS = {"jpeg": ((1, 3), (1,)), "png": ((1, 2, 3, 4), (1, 2)), "tiff": ((1, 2, 3, 4), (1, 2, 4))}
_ANY_LAYOUT = ((1, 2, 3, 4), (1, 2))
RECENT = 50  # requests the Retry-After estimate looks back on


class HttpError(Exception):
    """A request that gets an error status; ``str()`` is the one-line reason.

    Args:
        status: the HTTP status.
        message: the reason (``srdeploy upscale``'s message where there is one).
        retry_after: seconds for a Retry-After header (503).
    """

    def __init__(self, status: int, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True)
class Options:
    """A request's query: output extension (".png"), JPEG/WebP quality, alpha mode; None = default."""

    ext: str | None = None
    quality: int | None = None
    alpha: str | None = None


def parse_options(query: Mapping[str, str]) -> Options:
    """``?ext=png&quality=90&alpha=resize`` -> Options; anything else is a 400 naming it."""
    unknown = sorted(set(query) - set(QUERY_KEYS))
    if unknown:
        raise HttpError(400, f"unknown query parameter {unknown[0]!r}; this endpoint takes {', '.join(QUERY_KEYS)}")
    ext = query.get("ext") or None
    if ext is not None:
        ext = "." + ext.lower().lstrip(".")
        if ext not in IMAGE_EXTS:
            raise HttpError(400, f"ext={ext[1:]}: unsupported output format; use one of "
                                 + ", ".join(e[1:] for e in IMAGE_EXTS))
    quality = query.get("quality") or None
    if quality is not None:
        if not re.fullmatch(r"-?[0-9]{1,4}", quality):
            raise HttpError(400, f"quality={quality}: not a whole number (JPEG 0-100, WebP 1-100)")
        quality = int(quality)
    alpha = query.get("alpha") or None
    if alpha is not None and alpha not in ALPHA_MODES:
        raise HttpError(400, f"alpha={alpha}: use {' or '.join(ALPHA_MODES)}")
    return Options(ext=ext, quality=quality, alpha=alpha)


def upload_label(filename: str | None) -> str:
    """What messages call an upload: its file name without folders or control characters, else "upload"."""
    if not filename:
        return "upload"
    name = re.split(r"[/\\]", filename)[-1]
    name = "".join(c for c in name if c.isprintable() and c not in "\"'<>")[:100].strip()
    return name or "upload"


@dataclass
class Reply:
    """A finished upscale: the encoded image and what to tell the client.

    ``release`` gives back the request's memory reservation: call it once the body is sent.
    """

    body: bytes | memoryview
    ext: str
    timings: dict[str, float]
    release: Callable[[], None] = field(default=lambda: None)

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES.get(self.ext, "application/octet-stream")


class UpscaleService:
    """The shared session, scheduler, memory ledger, metrics and worker threads of one server (or replica).

    Args:
        session: the open session (closed by ``close``).
        config: the server's settings.
    """

    def __init__(self, session, config: ServeConfig) -> None:
        from ..budget import BASE_BYTES, default_budget, gpu_free_memory, weights_bytes
        from ..upscale import Upscaler

        config.validate()
        self.session = session
        self.config = config
        self.metrics = Metrics()
        gpu = session.device.startswith("cuda")
        self.budget = config.run.tiling.max_memory or default_budget(gpu_free=gpu_free_memory(session.device))
        # the fixed part upscale's prediction adds once (interpreter, weights); requests share the rest
        base = weights_bytes(session) + (0 if gpu else BASE_BYTES)
        self.ledger = MemoryLedger(max(1, self.budget - base))
        self.max_pixels = config.max_pixels or pixel_limit()
        # the budget resolved once for every request (as upscale resolves it once per run)
        self.tiling = replace(config.run.tiling, max_memory=self.budget)
        self.upscaler = Upscaler(session, self.tiling)  # checks the flags against the model, describes the tiling
        self.scheduler = Scheduler(session, max_batch=config.max_batch, wait_s=config.batch_wait_ms / 1000,
                                   on_batch=self.metrics.batch, on_dropped=self.metrics.dropped)
        # one thread per admitted request: most of its life it waits for memory or for its tiles
        self.pool = ThreadPoolExecutor(max_workers=config.max_queue, thread_name_prefix="srdeploy-request")
        self._lock = threading.Lock()
        self._inflight = 0
        self._recent: deque[float] = deque(maxlen=RECENT)
        self._closed = False

    # ------------------------------------------------------------------ admission
    @property
    def queue_depth(self) -> int:
        return self._inflight

    @property
    def ready(self) -> bool:
        """Model loaded and the queue below its bound."""
        return not self._closed and self._inflight < self.config.max_queue

    def admit(self) -> Ticket:
        """A ticket for a new request, or ``HttpError`` 503 with Retry-After when ``--max-queue`` are in flight."""
        with self._lock:
            if self._closed or self._inflight >= self.config.max_queue:
                raise HttpError(503, f"server busy: {self._inflight} requests in progress (--max-queue "
                                     f"{self.config.max_queue}); retry later", retry_after=self.retry_after())
            self._inflight += 1
        return Ticket(self.config.timeout_s)

    def finish(self, ticket: Ticket, *, ok: bool) -> None:
        """The request is over (response sent or abandoned): free its queue place."""
        with self._lock:
            self._inflight -= 1
            if ok:
                self._recent.append(time.monotonic() - ticket.start)

    def metrics_text(self) -> str:
        """``GET /metrics``: the counters with the queue and memory gauges as they are now."""
        return self.metrics.render(queue_depth=self._inflight, queue_limit=self.config.max_queue,
                                   memory_waiting=self.ledger.waiting, pending_tiles=self.scheduler.pending_tiles,
                                   reserved=self.ledger.reserved, capacity=self.ledger.capacity)

    def retry_after(self) -> int:
        """Seconds a refused client should wait: the median time of recent requests, at least 1."""
        recent = sorted(self._recent)
        return max(1, math.ceil(recent[len(recent) // 2])) if recent else 1

    # ------------------------------------------------------------------ one request
    def upscale(self, body: bytes, query: Mapping[str, str], ticket: Ticket, *, filename: str | None = None) -> Reply:
        """Upscale one uploaded image (blocking: run it on ``pool``); see the module doc.

        Raises ``HttpError`` for bad requests and timeouts, ``Cancelled`` when the client went away.
        """
        try:
            return self._upscale(body, query, ticket, filename)
        except (HttpError, Cancelled):
            raise
        except NotAnImageError as exc:
            raise HttpError(415, str(exc)) from None
        except ImageTooLargeError as exc:
            raise HttpError(413, str(exc)) from None
        except ValueError as exc:
            raise HttpError(400, str(exc)) from None

    def _upscale(self, body: bytes, query: Mapping[str, str], ticket: Ticket, filename: str | None) -> Reply:
        from ..media.writers import encode_bands, streams
        from ..upscale import Upscaler

        opts = parse_options(query)
        name = upload_label(filename)
        fmt, size = image_header(body, name=name, max_pixels=self.max_pixels, known_only=True)
        ext = opts.ext or _name_ext(name) or FORMAT_EXT.get(fmt, ".png")
        check_quality(opts.quality, f"x{ext}")
        tiling = self.tiling if opts.alpha is None else replace(self.tiling, alpha=opts.alpha)
        up = Upscaler(TicketSession(self.session, self.scheduler, ticket), tiling)
        held = self.ledger.acquire(self._estimate(up, fmt, size, len(body), ext), ticket)
        try:
            t0 = time.perf_counter()
            img, meta = decode_image(body, name=name, order="BGR", max_pixels=self.max_pixels)
            ticket.add("decode", time.perf_counter() - t0)
            stem = name.rsplit(".", 1)[0] if _name_ext(name) else name
            check_writable(f"{stem}{ext}", dtype=img.dtype, channels=meta.channels)
            h, w, s = img.shape[0], img.shape[1], up.scale
            held = self.ledger.shrink(held, self._need(up, h, w, meta.channels, img.dtype.itemsize, ext, len(body)))
            out = io.BytesIO()
            t0, infer0 = time.perf_counter(), ticket.timings.get("infer", 0.0)
            encode_bands(out, up.bands(img, order="BGR", streamed=streams(ext)), ext=ext, height=h * s, width=w * s,
                         channels=meta.channels, dtype=img.dtype, order="BGR", quality=opts.quality, name=stem)
            # tiling, pixel mapping, stitching and encoding: the request's own work besides its tiles
            ticket.add("convert", time.perf_counter() - t0 - (ticket.timings.get("infer", 0.0) - infer0))
            del img
        except BaseException:
            self.ledger.release(held)
            raise
        released = []

        def release() -> None:
            if not released:
                released.append(True)
                self.ledger.release(held)

        return Reply(body=out.getbuffer(), ext=ext, timings=dict(ticket.timings), release=release)

    # ------------------------------------------------------------------ memory
    def _need(self, up, h: int, w: int, channels: int, itemsize: int, ext: str, body_len: int) -> int:
        """Bytes one request holds beyond the fixed part: upscale's predicted peak of this image
        (activations of its windows, input, band, held output) plus the request and response bodies."""
        from ..media.writers import streams

        streamed = streams(ext)
        out_raw = h * up.scale * w * up.scale * channels * itemsize
        encoded = out_raw + out_raw // 64 + (64 << 10)  # at most the pixels plus container/deflate overhead
        pred = up.predict(h, w, channels=channels, itemsize=itemsize, streamed=streamed)
        if pred is None:  # no ONNX graph to size the activations from: the image buffers only, as upscale
            images = h * w * channels * itemsize + (0 if streamed else out_raw)
        else:
            images = pred.total - pred.base
        return images + body_len + encoded

    def _estimate(self, up, fmt: str, size: tuple[int, int] | None, body_len: int, ext: str) -> int:
        """``_need`` before decoding: the largest over the layouts the format can decode to and both
        EXIF orientations. A header without a size (a rarer format OpenCV decodes) reserves
        everything: the image then decodes and runs alone."""
        if size is None:
            return self.ledger.capacity
        chans, sizes = _LAYOUTS.get(fmt, _ANY_LAYOUT)
        w, h = size
        return max(self._need(up, a, b, c, i, ext, body_len) for a, b in ((h, w), (w, h)) for c in chans for i in sizes)

    def close(self) -> None:
        """Refuse new requests, finish the scheduler, close the session."""
        with self._lock:
            self._closed = True
        self.scheduler.close()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.session.close()


def _name_ext(name: str) -> str | None:
    """The image extension of an upload's file name, if it has one of ours."""
    ext = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return ext if ext in IMAGE_EXTS else None
