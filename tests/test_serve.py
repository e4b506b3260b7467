"""``srdeploy serve``: responses equal ``srdeploy upscale``'s files, batching across requests,
bounded queue and memory, bad requests, cancel on disconnect, token and host rules."""

from __future__ import annotations

import concurrent.futures as cf
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from _serve import metric, raw_request, start, upscale_cli, wait_until  # noqa: E402

from srdeploy.runtime.open import SessionRecipe  # noqa: E402
from srdeploy.runtime.serve.config import ServeConfig  # noqa: E402
from srdeploy.runtime.serve.ledger import MemoryLedger  # noqa: E402
from srdeploy.runtime.serve.scheduler import Scheduler, Ticket  # noqa: E402
from srdeploy.runtime.settings import RunSettings  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    from _models import export_spread_model

    return export_spread_model(tmp_path_factory.mktemp("serve_model") / "spread_x2.onnx", scale=2)


@pytest.fixture(scope="module")
def images(tmp_path_factory, set5) -> dict[str, Path]:
    """48x40 crops of a real photo: RGB PNG, JPEG, RGBA PNG (varying alpha), 16-bit gray PNG."""
    d = tmp_path_factory.mktemp("serve_images")
    bgr = cv2.imread(str(set5 / "bird.png"))[100:140, 60:108]
    alpha = np.linspace(0, 255, 48, dtype=np.uint8)[None, :].repeat(40, 0)
    gray16 = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257
    files = {"rgb": d / "rgb.png", "jpg": d / "photo.jpg", "rgba": d / "rgba.png", "gray16": d / "gray16.png"}
    cv2.imwrite(str(files["rgb"]), bgr)
    cv2.imwrite(str(files["jpg"]), bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
    cv2.imwrite(str(files["rgba"]), np.dstack([bgr, alpha]))
    cv2.imwrite(str(files["gray16"]), gray16)
    return files


def bomb_png() -> bytes:
    """A PNG header declaring 100000 x 100000 pixels (10 GP) with a tiny body: must never be decoded."""
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
            + b"\x00\x00\x00\x00IEND\xaeB`\x82")


@pytest.mark.slow
def test_responses_equal_upscale_files_and_tiles_batch_across_requests(model, images, tmp_path):
    # four concurrent requests of one size: their 38x40 windows share batches (a long batch wait makes sure)
    cases = {  # name: (request kwargs, upscale flags, output name)
        "rgb": ({"content": images["rgb"].read_bytes()}, [], "rgb.png"),
        "jpg": ({"files": {"file": ("photo.jpg", images["jpg"].read_bytes(), "image/jpeg")},
                 "params": {"quality": "90"}}, ["--quality", "90"], "photo.jpg"),
        "rgba": ({"content": images["rgba"].read_bytes(), "params": {"alpha": "model"}}, [], "rgba.png"),
        "gray16": ({"content": images["gray16"].read_bytes(), "params": {"ext": "tiff"}}, [], "gray16.tiff"),
    }
    with start(model, tiling={"tile": 16}, max_batch=8, batch_wait_ms=300) as srv:
        with httpx.Client(base_url=srv.url, timeout=60) as client, cf.ThreadPoolExecutor(4) as pool:
            futures = {k: pool.submit(client.post, "/v1/upscale", **req) for k, (req, _, _) in cases.items()}
            got = {k: f.result() for k, f in futures.items()}
            text = client.get("/metrics").text
    for name, (_, flags, out_name) in cases.items():
        r = got[name]
        assert r.status_code == 200, (name, r.text)
        assert "infer;dur=" in r.headers["server-timing"] and "total;dur=" in r.headers["server-timing"]
        want = upscale_cli(model, images[name], tmp_path / name / out_name, "--tile", "16", *flags)
        assert r.content == want, f"{name}: response differs from srdeploy upscale's {out_name}"
    assert got["jpg"].headers["content-type"] == "image/jpeg" and got["gray16"].headers["content-type"] == "image/tiff"
    tiles, batches = metric(text, "srdeploy_batch_tiles_sum"), metric(text, "srdeploy_batch_tiles_count")
    assert tiles == 5 * 9 and batches < tiles / 2, (tiles, batches)  # 3x3 tiles per pass, rgba has 2 passes
    assert metric(text, 'srdeploy_requests_total{status="200"}') == 4
    assert metric(text, "srdeploy_memory_reserved_bytes") == 0 and metric(text, "srdeploy_queue_depth") == 0


def test_bad_requests_get_their_4xx_while_a_load_runs(model, images, tmp_path):
    good = images["rgb"].read_bytes()
    truncated = good[: len(good) // 2]
    # the one-line reasons upscale prints for the same bytes (the name is the upload's)
    (tmp_path / "bad.png").write_bytes(truncated)
    (tmp_path / "notes.txt").write_bytes(b"this is not an image")
    # the model is held at a gate while the bad requests go in, so the load is provably still running
    with start(model, gate=True, tiling={"tile": 16}, max_upload=64 << 10, token="s3cret") as srv:
        auth = {"Authorization": "Bearer s3cret"}
        gate = srv.service.session
        with httpx.Client(base_url=srv.url, timeout=60, headers=auth) as client, cf.ThreadPoolExecutor(6) as pool:
            load = [pool.submit(client.post, "/v1/upscale", content=good) for _ in range(6)]
            assert gate.entered.wait(30)  # a load request is inside the model
            t0 = time.monotonic()
            oversize = client.post("/v1/upscale", content=b"\0" * (65 << 10))
            bomb = client.post("/v1/upscale", content=bomb_png())
            # a client's file name never becomes a path: only its last part is echoed
            garbage = client.post("/v1/upscale", files={"file": ("../../notes.txt", b"this is not an image")})
            cut = client.post("/v1/upscale", files={"file": ("bad.png", truncated)})
            no_token = httpx.post(srv.url + "/v1/upscale", content=good)
            wrong = httpx.post(srv.url + "/v1/upscale", content=good, headers={"Authorization": "Bearer nope"})
            bad_query = client.post("/v1/upscale", content=good, params={"scale": "8"})
            answered = time.monotonic() - t0
            assert not any(f.done() for f in load)  # every 4xx came while the load was in flight
            gate.gate.set()
            results = [f.result() for f in load]
            text = client.get("/metrics").text
        assert httpx.get(srv.url + "/metrics").status_code == 401  # the counters need the token too
        assert httpx.get(srv.url + "/healthz").text == "ok\n" and httpx.get(srv.url + "/readyz").status_code == 200
    assert answered < 7 * 1.0, answered  # seven bad requests, each well within its 1 s
    assert [r.status_code for r in results] == [200] * 6 and len({r.content for r in results}) == 1
    assert oversize.status_code == 413 and "--max-upload" in oversize.text
    assert bomb.status_code == 413 and "declared image size 100000x100000" in bomb.text
    assert garbage.status_code == 415
    assert garbage.text == "notes.txt: not a readable image (OpenCV could not decode it)\n"
    assert cut.status_code == 400
    assert cut.text == "bad.png: truncated PNG file (no end-of-image marker); the file is incomplete\n"
    assert no_token.status_code == wrong.status_code == 401
    assert no_token.headers["www-authenticate"].startswith("Bearer")
    assert bad_query.status_code == 400 and "'scale'" in bad_query.text
    for name in ("bad.png", "notes.txt"):  # the same reason as the command line's
        rc, err = _upscale_error(model, tmp_path / name, tmp_path / "out")
        assert rc == 1 and {"bad.png": cut, "notes.txt": garbage}[name].text.strip() in err
    assert metric(text, 'srdeploy_requests_total{status="200"}') == 6


def _upscale_error(model: Path, src: Path, out: Path) -> tuple[int, str]:
    r = subprocess.run([sys.executable, "-m", "srdeploy", "upscale", "-q", "-i", src.name, "-o", str(out), "--model",
                        str(model)], capture_output=True, text=True, cwd=src.parent, timeout=120)
    return r.returncode, r.stderr


def test_413_comes_before_the_body_is_read(model):
    with start(model, max_upload=1 << 20) as srv:
        # 10 MB announced, 100 bytes sent: the answer must not wait for the rest
        sock, data = raw_request(srv.port, "POST /v1/upscale HTTP/1.1\nHost: x\nContent-Length: 10000000", b"\0" * 100)
        sock.close()
        assert data.startswith(b"HTTP/1.1 413"), data[:200]
        # no Content-Length (chunked): refused once the bytes read pass the limit
        chunk = b"\0" * (600 << 10)
        body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(2)) + b"0\r\n\r\n"
        sock, data = raw_request(srv.port, "POST /v1/upscale HTTP/1.1\nHost: x\nTransfer-Encoding: chunked", body)
        sock.close()
        assert data.startswith(b"HTTP/1.1 413"), data[:200]
        assert httpx.get(srv.url + "/healthz").status_code == 200


def test_full_queue_gives_503_with_retry_after(model, images):
    body = images["rgb"].read_bytes()
    with start(model, gate=True, max_queue=2) as srv, cf.ThreadPoolExecutor(2) as pool:
        gate = srv.service.session
        busy = [pool.submit(httpx.post, srv.url + "/v1/upscale", content=body, timeout=60) for _ in range(2)]
        wait_until(lambda: srv.service.queue_depth == 2, what="two requests admitted")
        refused = httpx.post(srv.url + "/v1/upscale", content=body)
        not_ready = httpx.get(srv.url + "/readyz")
        gate.gate.set()
        assert [f.result().status_code for f in busy] == [200, 200]
        assert httpx.get(srv.url + "/readyz").status_code == 200
        assert httpx.post(srv.url + "/v1/upscale", content=body, timeout=60).status_code == 200
    assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1 and "--max-queue 2" in refused.text
    assert not_ready.status_code == 503 and "retry-after" in not_ready.headers


def test_timeout_gives_503(model, images):
    with start(model, gate=True, timeout_s=0.5) as srv:
        r = httpx.post(srv.url + "/v1/upscale", content=images["rgb"].read_bytes(), timeout=30)
        srv.service.session.gate.set()
        assert r.status_code == 503 and "timed out after 0.5 s" in r.text and "retry-after" in r.headers
        wait_until(lambda: srv.service.ledger.reserved == 0 and srv.service.queue_depth == 0, what="clean-up")


def test_disconnect_cancels_the_remaining_tiles(model, images):
    body = images["rgb"].read_bytes()  # tile 8: 5 x 6 = 30 tiles, one per call
    with start(model, gate=True, tiling={"tile": 8}) as srv:
        gate = srv.service.session
        sock, _ = raw_request(srv.port, f"POST /v1/upscale HTTP/1.1\nHost: x\nContent-Length: {len(body)}", body,
                              read=False)
        assert gate.entered.wait(30)
        sock.close()  # the client goes away while its first tile runs
        wait_until(lambda: srv.service.metrics.requests.get(499) == 1, what="the disconnect to be seen")
        gate.gate.set()
        wait_until(lambda: srv.service.queue_depth == 0 and srv.service.ledger.reserved == 0, what="clean-up")
        assert gate.tiles <= 2, f"{gate.tiles} of 30 tiles ran after the client left"
        assert httpx.post(srv.url + "/v1/upscale", content=body, timeout=60).status_code == 200
        # a client that leaves during its upload is counted as gone too, not as a server error
        sock, _ = raw_request(srv.port, "POST /v1/upscale HTTP/1.1\nHost: x\nContent-Length: 1000", b"\0" * 10,
                              read=False)
        sock.close()
        wait_until(lambda: srv.service.metrics.requests.get(499) == 2, what="the second disconnect")
        assert 500 not in srv.service.metrics.requests and srv.service.queue_depth == 0


def test_memory_budget_is_shared_across_requests(model, images):
    body = images["rgb"].read_bytes()
    with start(model, gate=True) as srv, cf.ThreadPoolExecutor(2) as pool:
        service = srv.service
        first = pool.submit(httpx.post, srv.url + "/v1/upscale", content=body, timeout=60)
        wait_until(lambda: service.session.entered.is_set(), what="the first request's tile")
        held = service.ledger.reserved
        assert 0 < held < service.ledger.capacity
        # shrink the budget so that a second request of the same size no longer fits beside the first
        service.ledger.capacity = held + held // 2
        second = pool.submit(httpx.post, srv.url + "/v1/upscale", content=body, timeout=60)
        wait_until(lambda: service.ledger.waiting == 1, what="the second request to wait for memory")
        assert service.session.calls == 1 and service.ledger.reserved == held  # it waits before decoding
        # bad requests are answered from their bytes, without waiting for memory
        assert httpx.post(srv.url + "/v1/upscale", content=b"GIF? no: garbage" * 10).status_code == 415
        assert httpx.post(srv.url + "/v1/upscale", content=bomb_png()).status_code == 413
        service.session.gate.set()
        assert first.result().status_code == 200 and second.result().status_code == 200
        assert first.result().content == second.result().content


def test_ledger_serves_in_order_and_caps_at_capacity():
    import time

    ledger = MemoryLedger(100)
    assert ledger.acquire(500, Ticket(30)) == 100  # larger than the budget: runs alone
    with cf.ThreadPoolExecutor(2) as pool:
        big = pool.submit(ledger.acquire, 95, Ticket(30))
        wait_until(lambda: ledger.waiting == 1, what="big to queue")
        small = pool.submit(ledger.acquire, 10, Ticket(30))
        wait_until(lambda: ledger.waiting == 2, what="small to queue behind big")
        ledger.release(50)  # room for small, not for big: small still waits its turn
        time.sleep(0.3)
        assert not small.done() and ledger.reserved == 50
        ledger.release(50)
        assert big.result() == 95
        time.sleep(0.3)
        assert not small.done()
        assert ledger.shrink(95, 30) == 30 and small.result() == 10
    assert ledger.reserved == 40
    with pytest.raises(Exception, match="timed out"):
        ledger.acquire(100, Ticket(0.1))


def test_scheduler_groups_by_window_shape_up_to_max_batch(model):
    from _serve import GateSession

    from srdeploy.runtime.open import open_session

    session = GateSession(open_session(model, threads=1))
    sched = Scheduler(session, max_batch=3, wait_s=0.3)
    rng = np.random.default_rng(0)
    blocker = rng.random((1, 3, 4, 10), dtype=np.float32)
    xs = [rng.random((n, 3, h, 10), dtype=np.float32) for n, h in ((1, 8), (2, 8), (1, 6), (1, 8))]
    with cf.ThreadPoolExecutor(5) as pool:
        first = pool.submit(sched.infer, blocker, Ticket(30))
        assert session.entered.wait(30)  # the scheduler is busy: the next four queue up
        futures = [pool.submit(sched.infer, x, Ticket(30)) for x in xs]
        wait_until(lambda: sched.pending_tiles == 5, what="tiles to queue")
        session.gate.set()
        outs = [first.result()] + [f.result() for f in futures]
    sched.close()
    # oldest shape first, up to 3 tiles (the last 8-row tile does not fit beside 1 + 2), other shapes apart
    assert session.shapes == [(1, 3, 4, 10), (3, 3, 8, 10), (1, 3, 6, 10), (1, 3, 8, 10)]
    for x, y in zip([blocker] + xs, outs):  # each caller gets its own rows, as a call of its own gives
        np.testing.assert_array_equal(y, session.real.infer(x))
    session.close()


def test_host_other_than_loopback_needs_a_token_or_insecure():
    run = RunSettings(SessionRecipe("model.onnx"))
    with pytest.raises(ValueError, match="--token SECRET"):
        ServeConfig(run=run, host="0.0.0.0").validate()
    ServeConfig(run=run, host="0.0.0.0", token="t").validate()
    ServeConfig(run=run, host="0.0.0.0", insecure=True).validate()
    for host in ("127.0.0.1", "127.0.0.5", "::1", "localhost"):
        ServeConfig(run=run, host=host).validate()
    r = subprocess.run([sys.executable, "-m", "srdeploy", "serve", "--host", "0.0.0.0", "--port", "0"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "--token SECRET" in r.stderr and "--insecure" in r.stderr


NO_EXTRAS = r"""
import importlib, importlib.abc, pkgutil, sys

BLOCKED = ("starlette", "uvicorn", "multipart", "python_multipart", "ray", "torch", "torchvision")

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None

sys.meta_path.insert(0, Block())
import srdeploy.runtime.serve as serve
names = [m.name for m in pkgutil.walk_packages(serve.__path__, prefix="srdeploy.runtime.serve.")]
for name in names:
    importlib.import_module(name)
assert {"srdeploy.runtime.serve.app", "srdeploy.runtime.serve.ray_app", "srdeploy.runtime.serve.service"} <= set(names)
from srdeploy.cli import main
rc = main(["serve", "--port", "0"])
assert not any(m.split(".")[0] in BLOCKED for m in sys.modules), "an optional package got imported"
raise SystemExit(rc)
"""


def test_runtime_imports_without_the_serve_extra():
    r = subprocess.run([sys.executable, "-c", NO_EXTRAS], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    assert "pip install 'srdeploy[serve]'" in r.stderr and "starlette" in r.stderr


def test_documented_defaults():
    """docs/serve.md's defaults, pinned as literals."""
    from srdeploy.cli import build_parser

    a = build_parser().parse_args(["serve"])
    assert (a.host, a.port, a.max_batch, a.batch_wait_ms, a.max_queue, a.max_upload, a.timeout) == \
        ("127.0.0.1", 8000, 8, 2.0, 32, 50 << 20, 300.0)
    assert (a.tile, a.batch, a.alpha, a.max_memory, a.token, a.insecure, a.ray, a.replicas) == \
        ("auto", 1, "model", None, None, False, False, 1)
    assert a.precision == "auto"  # as upscale: a response equals upscale's output with the same flags


def test_tile_flags_reach_the_settings_value():
    """serve takes the one ``RunSettings`` every runtime command builds, with every tile flag in it."""
    from srdeploy.cli import build_parser
    from srdeploy.runtime.cli import settings_from_args
    from srdeploy.runtime.cli.serve import serve_config
    from srdeploy.runtime.settings import TileSettings

    args = build_parser().parse_args(["serve", "--model", "m.onnx", "--threads", "3", "--tile", "48", "--tile-pad",
                                      "6", "--batch", "2", "--feather", "3", "--alpha", "resize", "--max-memory", "512M"])
    config = serve_config(args)
    assert config.run == settings_from_args(args)
    assert config.run.tiling == TileSettings(tile=48, tile_pad=6, batch=2, feather=3, alpha="resize",
                                             max_memory=512 << 20)
    assert (config.run.recipe.model, config.run.recipe.threads) == ("m.onnx", 3)
    bad = build_parser().parse_args(["serve", "--feather", "-1"])
    with pytest.raises(ValueError, match="tile settings"):
        serve_config(bad)
