"""``srdeploy serve --ray``: the same application as a Ray Serve deployment.

Each replica opens the session from the picklable ``SessionRecipe`` in the ``ServeConfig``
(``--precision auto`` already resolved by the driver, so all replicas run one path) and serves
the same Starlette app (``app.build_app``) through Ray Serve's ASGI ingress, so the API, the page
and the outputs are the single-process server's. Requests reaching a replica are grouped
by ``@serve.batch`` (up to ``--max-batch`` requests, waiting ``--batch-wait-ms``); the group runs
on the replica's worker threads, whose tiles its scheduler batches as in one process.

Replicas: ``--replicas N`` fixed, or ``auto``: Ray's autoscaler on queue length (target
``--max-batch`` ongoing requests per replica, 1 up to the CPUs Ray sees divided by each
replica's threads). Each replica asks Ray for ``--threads`` CPUs (1 when unset) and
``--gpus-per-replica`` GPUs. A replica takes ``--max-queue`` requests at once, Ray's proxy queues
``--max-queue`` more and answers 503 beyond; ``/metrics`` and ``/readyz`` describe the replica that answers (Ray's own metrics cover
the deployment). Ray's proxy reads a request body before a replica sees it, so ``--max-upload``
still gives 413, but after the upload.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from typing import Callable

from .config import ServeConfig

APP_NAME = "srdeploy"


def deployment_options(config: ServeConfig, *, cluster_cpus: float | None = None) -> dict:
    """``@serve.deployment`` options for ``config`` (replicas or autoscaling, CPUs and GPUs per replica)."""
    cpus = config.run.recipe.threads or 1
    opts: dict = {"max_ongoing_requests": config.max_queue, "max_queued_requests": config.max_queue,
                  "ray_actor_options": {"num_cpus": cpus, "num_gpus": config.gpus_per_replica}, **_backpressure()}
    if config.replicas == "auto":
        most = max(1, int((cluster_cpus or cpus) // cpus))
        opts["autoscaling_config"] = {"min_replicas": 1, "initial_replicas": 1, "max_replicas": most,
                                      "target_ongoing_requests": config.max_batch}
    else:
        opts["num_replicas"] = config.replicas
    return opts


# Over --max-queue Ray's proxy answers 503 itself, before a replica sees the request; it cannot know
# the replicas' recent request times (the single-process server's estimate), so it says "retry in 1 s".
RAY_RETRY_AFTER_S = 1


def _backpressure() -> dict:
    """Retry-After on the proxy's 503, where this Ray has ``BackpressureConfig`` (newer than 2.9)."""
    try:
        from ray.serve.config import BackpressureConfig  # noqa: F401
    except ImportError:
        return {}
    return {"backpressure_config": {"retry_after_s": RAY_RETRY_AFTER_S}}


def build_deployment(config: ServeConfig, *, cluster_cpus: float | None = None):
    """The Ray Serve deployment (unbound) serving ``config``; ``.bind(config)`` makes the application."""
    from ray import serve

    from .app import build_app
    from .service import UpscaleService

    @serve.deployment(name=APP_NAME, **deployment_options(config, cluster_cpus=cluster_cpus))
    @serve.ingress()
    class Replica:
        """One replica: its own session, scheduler, memory ledger and worker threads."""

        def __init__(self, cfg: ServeConfig) -> None:
            from ..open import open_session

            self.service = UpscaleService(open_session(cfg.run.recipe), cfg)

        def __serve_build_asgi_app__(self):
            return build_app(self.service, run=self.run)

        async def run(self, body: bytes, query: dict, ticket, filename: str | None):
            result = await self.batched((body, query, ticket, filename))
            if isinstance(result, BaseException):
                raise result
            result.body = bytes(result.body)  # Ray pickles the response to its proxy: no memoryview
            return result

        @serve.batch(max_batch_size=config.max_batch, batch_wait_timeout_s=config.batch_wait_ms / 1000)
        async def batched(self, jobs: list[tuple]) -> list:
            # each request of the group on its own worker thread: their tiles meet in the scheduler
            loop = asyncio.get_running_loop()
            calls = [loop.run_in_executor(self.service.pool, functools.partial(self.service.upscale, *job[:3],
                                                                                filename=job[3])) for job in jobs]
            return list(await asyncio.gather(*calls, return_exceptions=True))

        def __del__(self) -> None:
            self.service.close()

    return Replica


def deploy(config: ServeConfig) -> None:
    """Start Ray Serve's HTTP proxy on ``config.host:config.port`` and deploy the app (Ray already initialised)."""
    import ray
    from ray import serve

    serve.start(http_options={"host": config.host, "port": config.port})
    replica = build_deployment(config, cluster_cpus=ray.cluster_resources().get("CPU"))
    serve.run(replica.bind(config), name=APP_NAME, route_prefix="/")


def run_ray(config: ServeConfig, *, log: Callable[[str], None]) -> None:
    """``srdeploy serve --ray``: connect to (or start) Ray, deploy, serve until Ctrl-C/SIGTERM, shut down."""
    import ray
    from ray import serve

    # --precision auto chosen once, here: every replica runs the same path (and says which), never a mix
    config = dataclasses.replace(config, run=config.run.pinned())
    # "local": a fresh instance, never a cluster another program started on this machine (ray.init(None) may join one)
    ray.init(address=config.address or "local", include_dashboard=False, log_to_driver=False)
    try:
        deploy(config)
        replicas = "autoscaling" if config.replicas == "auto" else f"{config.replicas} replica(s)"
        note = f"; {config.run.recipe.note}" if config.run.recipe.note else ""
        log(f"Ray Serve: {replicas} of {config.run.recipe.model}, listening on http://{config.host}:{config.port}/"
            f"{note}")
        while True:  # the CLI turns Ctrl-C and SIGTERM into KeyboardInterrupt
            time.sleep(3600)
    finally:
        serve.shutdown()
        ray.shutdown()
