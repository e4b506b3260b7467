"""The HTTP application (Starlette) and the single-process server (uvicorn).

Routes:

* ``POST /v1/upscale``: the body is the image (or multipart field ``file``); query ``ext``,
  ``quality``, ``alpha``. 200 with the encoded image and a ``Server-Timing`` header; 400/415 with
  ``srdeploy upscale``'s one-line reason; 413 for a body over ``--max-upload`` (from
  Content-Length, before the rest is read) or a declared size over the pixel cap (before
  decoding); 401 without the bearer token; 503 with Retry-After over ``--max-queue`` or past
  ``--timeout``.
* ``GET /healthz`` (process alive), ``GET /readyz`` (model loaded, queue below its bound),
  ``GET /metrics`` (Prometheus text), ``GET /`` (the page).

With ``--token`` the API and ``/metrics`` need ``Authorization: Bearer TOKEN`` (compared in
constant time); the page, ``/healthz`` and ``/readyz`` hold nothing secret and stay open, so
probes and the page's own token prompt work. A client that disconnects cancels its request: its
waiting tiles are dropped and its memory freed.

Starlette and uvicorn are imported inside the functions: the runtime imports without them.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import socket
import sys
import time
from typing import Awaitable, Callable

from .page import CSP, PAGE
from .scheduler import ClientGone, DeadlineExceeded, Ticket
from .service import HttpError, Reply, UpscaleService

# run(body, query, ticket, filename) -> Reply: how the app gets a request upscaled (Ray swaps in @serve.batch)
Runner = Callable[[bytes, dict, Ticket, "str | None"], Awaitable[Reply]]
CLIENT_GONE = 499  # nginx's "client closed request": counted, never sent


def thread_runner(service: UpscaleService) -> Runner:
    """Run each request on the service's worker threads (the single-process server)."""

    async def run(body: bytes, query: dict, ticket: Ticket, filename: str | None) -> Reply:
        call = functools.partial(service.upscale, body, query, ticket, filename=filename)
        return await asyncio.get_running_loop().run_in_executor(service.pool, call)

    return run


def build_app(service: UpscaleService, *, run: Runner | None = None):
    """The Starlette application serving ``service``.

    Args:
        service: the shared session, scheduler, memory ledger and metrics.
        run: how a request is upscaled (default: ``thread_runner(service)``).
    """
    from starlette.applications import Starlette
    from starlette.routing import Route

    api = _Api(service, run or thread_runner(service))
    return Starlette(routes=[Route("/v1/upscale", api.upscale, methods=["POST"]), Route("/healthz", api.health),
                             Route("/readyz", api.ready), Route("/metrics", api.metrics), Route("/", api.page)])


class _Api:
    """The route handlers of one service."""

    def __init__(self, service: UpscaleService, run: Runner) -> None:
        from starlette import responses

        self.service, self.run, self.responses = service, run, responses
        self.token = service.config.token.encode() if service.config.token else None

    def authorized(self, request) -> bool:
        if self.token is None:
            return True
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.token)

    def error(self, status: int, message: str, retry_after: int | None = None):
        headers = {"Retry-After": str(retry_after)} if retry_after else {}
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="srdeploy"'
        return self.responses.PlainTextResponse(message + "\n", status_code=status, headers=headers)

    async def upscale(self, request):
        service, t0 = self.service, time.monotonic()
        if not self.authorized(request):
            service.metrics.request(401, time.monotonic() - t0)
            return self.error(401, "missing or wrong bearer token (Authorization: Bearer TOKEN)")
        try:
            ticket = service.admit()
        except HttpError as exc:
            service.metrics.request(exc.status, time.monotonic() - t0)
            return self.error(exc.status, str(exc), exc.retry_after)
        outcome = {"status": 500, "received": 0}

        def finish(sent: int) -> None:  # once the response is sent, or the request abandoned
            service.finish(ticket, ok=outcome["status"] == 200)
            service.metrics.request(outcome["status"], time.monotonic() - t0, bytes_in=outcome["received"],
                                    bytes_out=sent)

        try:
            reply = await self._upscale(request, ticket, outcome)
        except HttpError as exc:
            outcome["status"], response = exc.status, self.error(exc.status, str(exc), exc.retry_after)
        except DeadlineExceeded as exc:
            outcome["status"], response = 503, self.error(503, str(exc), service.retry_after())
        except ClientGone:
            outcome["status"] = CLIENT_GONE
            response = self.responses.Response(status_code=CLIENT_GONE)  # nobody is left to read it
        except Exception as exc:  # noqa: BLE001 - one line to the client; the server keeps serving
            print(f"srdeploy serve: error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
            response = self.error(500, f"unexpected {type(exc).__name__}: {exc}")
        except BaseException:  # cancelled (shutdown, Ray's proxy): free the queue place, then go on
            outcome["status"] = CLIENT_GONE
            finish(0)
            raise
        else:
            outcome["status"] = 200
            return image_response(reply, ticket, finish)
        finish(0)
        return response

    async def _upscale(self, request, ticket: Ticket, outcome: dict) -> Reply:
        body = await read_body(request, self.service.config.max_upload)
        outcome["received"] = len(body)
        filename = None
        if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            body, filename = await multipart_file(request, body)
        return await watched(request, self.run(body, dict(request.query_params), ticket, filename), ticket)

    async def health(self, request):
        return self.responses.PlainTextResponse("ok\n")

    async def ready(self, request):
        if self.service.ready:
            return self.responses.PlainTextResponse("ready\n")
        return self.error(503, f"not ready: {self.service.queue_depth} requests in progress (--max-queue "
                               f"{self.service.config.max_queue})", self.service.retry_after())

    async def metrics(self, request):
        if not self.authorized(request):
            return self.error(401, "missing or wrong bearer token (Authorization: Bearer TOKEN)")
        return self.responses.PlainTextResponse(self.service.metrics_text(), media_type="text/plain; version=0.0.4")

    async def page(self, request):
        headers = {"Content-Security-Policy": CSP, "Referrer-Policy": "no-referrer",
                   "X-Content-Type-Options": "nosniff"}
        return self.responses.HTMLResponse(PAGE, headers=headers)


async def read_body(request, limit: int) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes: from Content-Length before reading
    anything, else as soon as the bytes read pass it."""
    from ..budget import format_size

    declared = request.headers.get("content-length")
    too_big = f"request body over the upload limit of {format_size(limit)} (--max-upload)"
    if declared is not None:
        if not declared.isdigit():
            raise HttpError(400, f"Content-Length {declared!r} is not a number")
        if int(declared) > limit:
            raise HttpError(413, f"{too_big}: Content-Length {declared}")
    from starlette.requests import ClientDisconnect

    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HttpError(413, too_big)
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientGone("client disconnected during the upload") from None
    return b"".join(chunks)


async def multipart_file(request, body: bytes) -> tuple[bytes, str | None]:
    """The field ``file`` of a multipart body already read: (bytes, the client's file name)."""
    from starlette.exceptions import HTTPException
    from starlette.requests import Request

    sent = []

    async def replay() -> dict:
        if sent:
            return {"type": "http.disconnect"}
        sent.append(True)
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=16)
    except HTTPException as exc:
        raise HttpError(400, f"multipart body: {exc.detail}") from None
    try:
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise HttpError(400, "multipart body without a file field named 'file' (curl -F file=@photo.jpg)")
        return await upload.read(), upload.filename
    finally:
        await form.close()


async def watched(request, job: Awaitable[Reply], ticket: Ticket) -> Reply:
    """Await ``job`` while watching the connection: a client that disconnects cancels the ticket
    (its waiting tiles are dropped) and raises ``ClientGone``. A reply nobody takes is released."""
    task = asyncio.ensure_future(job)
    taken = []

    def release_unclaimed(t: asyncio.Future) -> None:
        if not taken and not t.cancelled() and t.exception() is None:
            t.result().release()

    task.add_done_callback(release_unclaimed)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            taken.append(True)
            return task.result()
        ticket.cancel(ClientGone("client disconnected"))
        raise ClientGone("client disconnected")
    except asyncio.CancelledError:  # the server (or Ray's proxy) gave up on this request
        ticket.cancel(ClientGone("request cancelled"))
        raise
    finally:
        watcher.cancel()


def image_response(reply: Reply, ticket: Ticket, on_sent: Callable[[int], None]):
    """The 200 response: the encoded image with Server-Timing; the request's memory and queue place
    are given back once it is sent (or the send fails)."""
    from starlette.responses import Response

    total = time.monotonic() - ticket.start
    timing = ", ".join(f"{k};dur={v * 1000:.1f}" for k, v in reply.timings.items()) + f", total;dur={total * 1000:.1f}"

    class _Sent(Response):
        async def __call__(self, scope, receive, send) -> None:
            try:
                await super().__call__(scope, receive, send)
            finally:
                reply.release()
                on_sent(len(reply.body))

    return _Sent(reply.body, media_type=reply.media_type,
                 headers={"Server-Timing": timing, "Cache-Control": "no-store",
                          "Content-Disposition": f'inline; filename="upscaled{reply.ext}"'})


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free port; read it from ``getsockname``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise OSError(f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc})") from None
    sock.listen(2048)
    return sock


def serve_http(service: UpscaleService, sock: socket.socket) -> None:
    """Serve ``service`` on the bound socket until SIGINT/SIGTERM (uvicorn's graceful shutdown)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(build_app(service), log_level="warning", access_log=False,
                                           lifespan="off", timeout_graceful_shutdown=10))
    server.run(sockets=[sock])
