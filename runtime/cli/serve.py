"""``srdeploy serve``: the upscaler as an HTTP service (argparse only at import time).

The handler builds one ``ServeConfig`` from the flags, opens the model once and serves it with
uvicorn (``srdeploy.runtime.serve``), or deploys it on Ray Serve with ``--ray``.
"""

from __future__ import annotations

import argparse
import os
import sys

from ._args import add_blend_args, add_session_args, add_tile_args, bytes_arg, settings_from_args

TOKEN_ENV = "SRDEPLOY_TOKEN"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="serve the upscaler over HTTP (API, web page, metrics; Ray Serve replicas with --ray)",
        description="Serve POST /v1/upscale (body: the image, or multipart field 'file'; query ext, quality, alpha), "
                    "GET /healthz, /readyz, /metrics and a web page at /. Responses equal `srdeploy upscale`'s output "
                    "with the same flags. Tiles of concurrent requests are batched; memory stays within --max-memory "
                    "across requests; over --max-queue requests get 503 with Retry-After. Needs "
                    "pip install 'srdeploy[serve]' (and 'srdeploy[cluster]' for --ray).")
    add_session_args(p, precision="auto")  # as upscale: a response equals upscale's output with the same flags
    add_tile_args(p, batch_help="tiles of one request per inference call (default 1); the scheduler batches tiles "
                                "of concurrent requests up to --max-batch")
    add_blend_args(p, alpha_help="; a request's ?alpha= wins")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; any other needs --token or --insecure)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0 = any free port, printed)")
    p.add_argument("--token", default=None, metavar="SECRET",
                   help=f"require 'Authorization: Bearer SECRET' on the API and /metrics (default: ${TOKEN_ENV}, "
                        "which keeps it out of the process list)")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback --host without a token")
    p.add_argument("--max-batch", type=int, default=8, metavar="N",
                   help="most tiles per inference call, across concurrent requests (default 8)")
    p.add_argument("--batch-wait-ms", type=float, default=2.0, metavar="MS",
                   help="after the first waiting tile, wait at most this long for more before a partial batch "
                        "(default 2)")
    p.add_argument("--max-queue", type=int, default=32, metavar="N",
                   help="most requests in progress (waiting or running); more get 503 with Retry-After (default 32)")
    p.add_argument("--max-upload", type=bytes_arg("--max-upload"), default="50M", metavar="SIZE",
                   help="largest request body, e.g. 50M (binary units; default 50M); larger gets 413 before the "
                        "rest is read")
    p.add_argument("--max-pixels", type=int, default=None, metavar="N",
                   help="largest declared image size in pixels; larger gets 413 before decoding (default: "
                        "$SRDEPLOY_MAX_IMAGE_PIXELS or 200 MP, as upscale)")
    p.add_argument("--timeout", type=float, default=300.0, metavar="S",
                   help="per-request limit in seconds, admission to last tile; past it 503 (default 300)")
    p.add_argument("--ray", action="store_true", help="deploy on Ray Serve (replicas; pip install 'srdeploy[cluster]')")
    p.add_argument("--address", default=None, metavar="ADDR",
                   help="with --ray: Ray cluster address (auto = a running cluster; default: start a local Ray)")
    p.add_argument("--replicas", type=_replicas, default=1, metavar="N|auto",
                   help="with --ray: replicas, or auto (autoscaling on queue length, 1..CPUs/threads; default 1)")
    p.add_argument("--gpus-per-replica", type=float, default=0.0, metavar="G",
                   help="with --ray: GPUs Ray reserves for each replica (default 0)")
    p.set_defaults(func=run_serve)


def _replicas(text: str) -> int | str:
    if text.strip().lower() == "auto":
        return "auto"
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"--replicas {text!r}: expected a number >= 1 or auto")
    return int(text)


def serve_config(args: argparse.Namespace):
    """The ``ServeConfig`` the flags describe: the ``RunSettings`` of every runtime command, plus the server's."""
    from ..serve.config import ServeConfig

    if not args.ray and (args.address or args.replicas != 1 or args.gpus_per_replica):
        raise ValueError("--address, --replicas and --gpus-per-replica apply to --ray only")
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV) or None
    config = ServeConfig(run=settings_from_args(args), host=args.host, port=args.port, token=token,
                         insecure=args.insecure, max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms,
                         max_queue=args.max_queue, max_upload=args.max_upload, max_pixels=args.max_pixels,
                         timeout_s=args.timeout, replicas=args.replicas, address=args.address,
                         gpus_per_replica=args.gpus_per_replica)
    config.validate()
    return config


def run_serve(args: argparse.Namespace) -> int:
    config = serve_config(args)
    if args.ray:
        from ..serve.ray_app import run_ray

        run_ray(config, log=lambda line: print(f"srdeploy serve: {line}", file=sys.stderr, flush=True))
        return 0
    import starlette  # noqa: F401 - before the model loads: a missing extra is one line up front
    import uvicorn  # noqa: F401

    from ..budget import format_size
    from ..open import describe_session, open_session
    from ..serve.app import bind, serve_http
    from ..serve.service import UpscaleService

    sock = bind(config.host, config.port)
    service = UpscaleService(open_session(config.run.recipe), config)
    try:
        host, port = sock.getsockname()[:2]
        url = f"http://{f'[{host}]' if ':' in host else host}:{port}/"
        print(describe_session(service.session, config.run.recipe.model, service.upscaler), file=sys.stderr)
        print(f"srdeploy serve: listening on {url} (max batch {service.scheduler.max_batch}, batch wait "
              f"{config.batch_wait_ms:g} ms, max queue {config.max_queue}, max memory {format_size(service.budget)}, "
              f"max upload {format_size(config.max_upload)}, token {'required' if config.token else 'off'})",
              file=sys.stderr, flush=True)
        serve_http(service, sock)
    finally:
        service.close()
        sock.close()
    print("srdeploy serve: stopped", file=sys.stderr)
    return 0
