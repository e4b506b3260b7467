"""``srdeploy serve --ray``: the same app on a local Ray Serve (loopback only), two replicas,
outputs identical to the single-process server's."""

from __future__ import annotations

import concurrent.futures as cf
from pathlib import Path

import cv2
import pytest

pytest.importorskip("starlette")
httpx = pytest.importorskip("httpx")
pytest.importorskip("ray.serve")

from _serve import start  # noqa: E402

from srdeploy.runtime.open import SessionRecipe  # noqa: E402
from srdeploy.runtime.serve.app import bind  # noqa: E402
from srdeploy.runtime.serve.config import ServeConfig  # noqa: E402
from srdeploy.runtime.serve.ray_app import APP_NAME, deploy, deployment_options  # noqa: E402
from srdeploy.runtime.settings import RunSettings, TileSettings  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    from _models import export_spread_model

    return export_spread_model(tmp_path_factory.mktemp("ray_model") / "spread_x2.onnx", scale=2)


def test_deployment_options_follow_the_flags():
    run = RunSettings(SessionRecipe("m.onnx", threads=2))
    fixed = deployment_options(ServeConfig(run=run, replicas=3, gpus_per_replica=0.5, max_queue=7))
    assert fixed["num_replicas"] == 3 and fixed["ray_actor_options"] == {"num_cpus": 2, "num_gpus": 0.5}
    assert fixed["max_queued_requests"] == 7 and "autoscaling_config" not in fixed
    try:  # the proxy's own 503 over --max-queue carries Retry-After too, where Ray can say it
        from ray.serve.config import BackpressureConfig
    except ImportError:
        BackpressureConfig = None
    if BackpressureConfig is not None:
        assert BackpressureConfig(**fixed["backpressure_config"]).retry_after_s == 1
    auto = deployment_options(ServeConfig(run=run, replicas="auto", max_batch=4), cluster_cpus=8)
    assert auto["autoscaling_config"] == {"min_replicas": 1, "initial_replicas": 1, "max_replicas": 4,
                                          "target_ongoing_requests": 4}


@pytest.mark.slow
def test_two_replicas_serve_the_same_bytes_as_one_process(model, set5, tmp_path):
    import ray
    from ray import serve

    src = tmp_path / "crop.png"
    cv2.imwrite(str(src), cv2.imread(str(set5 / "head.png"))[40:88, 50:110])
    body = src.read_bytes()
    with start(model, tiling={"tile": 24}) as srv:
        want = httpx.post(srv.url + "/v1/upscale", content=body, timeout=60).content
        refused = httpx.post(srv.url + "/v1/upscale", content=b"not an image")
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    sock.close()
    config = ServeConfig(run=RunSettings(SessionRecipe(str(model), threads=1), TileSettings(tile=24)), port=port,
                         replicas=2)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)  # never someone else's Ray
    try:
        deploy(config)
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=120) as client, cf.ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda _: client.post("/v1/upscale", content=body), range(4)))
            bad = client.post("/v1/upscale", content=b"not an image")
            health = client.get("/healthz")
        status = serve.status().applications[APP_NAME].deployments[APP_NAME]
        running = status.replica_states.get("RUNNING", 0)
    finally:
        serve.shutdown()
        ray.shutdown()
    assert [r.status_code for r in got] == [200] * 4, [r.text for r in got]
    assert all(r.content == want for r in got)
    assert "server-timing" in got[0].headers and health.text == "ok\n"
    assert bad.status_code == refused.status_code == 415 and bad.text == refused.text
    assert running == 2
