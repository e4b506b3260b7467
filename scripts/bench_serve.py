#!/usr/bin/env python
"""`srdeploy serve` against its targets (issue 26), every figure from one run.

Phases (the server is the real command, `python -m srdeploy serve`, in a child process):

1. **Throughput**: ``--requests`` uploads of small real images (``--size`` crops of Set14, PNG)
   from ``--clients`` concurrent clients (keep-alive connections), alternating block by block with
   `srdeploy bench`'s full path in this process (``upscale_frames``: uint8 RGB -> model ->
   uint8, one image per call, same model, size and ``--threads``), so background load hits both
   alike. Prints both fps, their ratio per pair and overall (target >= 0.90), p50/p99 latency and
   every non-200 status (target: none but deliberate 503s).
2. **Bad requests under load**: while ``--clients`` clients keep uploading, sends an oversize
   body (Content-Length over ``--max-upload``, body not sent), a decompression bomb (a PNG header
   declaring 10 GP), garbage, a truncated PNG and a wrong token; prints each status and time
   (target: its 4xx within 1 s) and the load's statuses (target: all 200).
3. **Leak**: ``--leak`` requests in a row from one client; the server's VmRSS after a warm-up
   (the first tenth) and at the end (target: growth <= 5%), and its VmHWM against --max-memory.
4. **Ray Serve** (``--ray``): a local Ray (``address="local"``, this machine's CPUs), the same app
   with 1 and with 2 replicas of ``--ray-threads`` threads, alternating, ``--requests`` uploads
   each; the 2/1 fps ratio (target >= 1.6 on an idle 2-core machine) and whether every output
   equals the single-process server's bytes (when both run one path: ``--precision auto`` may
   choose another at ``--ray-threads`` than at ``--threads``; the script prints both).

``--precision`` (default ``auto``, serve's default) is the server's, and the bench full path and
the Ray replicas run what it resolves to, so every ratio compares one path with itself.

The machine line first: date, CPU flags, cores, load average (before and after). Figures taken
on a loaded machine are noisy: compare the same-run ratios, and re-measure on an idle machine.

Usage:
  python scripts/bench_serve.py [--model M] [--size 64x64] [--threads 2] [--clients 16] [--requests 64]
      [--blocks 2] [--leak 300] [--max-batch 8] [--batch-wait-ms 2] [--ray] [--ray-threads 1]
      [--precision auto] [--json FILE] [--data DIR] [--skip throughput,bad,leak]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime as dt
import http.client
import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"


def machine_line() -> str:
    from srdeploy.runtime.profile import cpu_identity

    flags = sorted(cpu_identity()["flags"])
    return (f"{dt.date.today().isoformat()}  CPU flags: {' '.join(flags) or '?'}  cores: {os.cpu_count()}  "
            f"load average: {load()}")


def load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def load_images(data: Path, size: tuple[int, int], count: int) -> list[tuple[bytes, np.ndarray]]:
    """``count`` crops of ``size`` (w, h) from the Set14 photos: (PNG bytes, uint8 RGB array)."""
    import cv2

    w, h = size
    files = sorted((data / "benchmark" / "Set14").glob("*.png"))
    if not files:
        raise SystemExit(f"bench_serve: no Set14 images under {data}/benchmark/Set14 (--data DIR)")
    out = []
    for i in range(count):
        img = cv2.imread(str(files[i % len(files)]))
        y, x = (i * 7) % max(1, img.shape[0] - h), (i * 13) % max(1, img.shape[1] - w)
        crop = np.ascontiguousarray(cv2.resize(img, (max(w, img.shape[1]), max(h, img.shape[0])))[y:y + h, x:x + w])
        out.append((cv2.imencode(".png", crop)[1].tobytes(), np.ascontiguousarray(crop[:, :, ::-1])))
    return out


class Server:
    """`python -m srdeploy serve ... --port 0` in a child process; ``url`` once it listens."""

    def __init__(self, args: argparse.Namespace) -> None:
        cmd = [sys.executable, "-m", "srdeploy", "serve", "--port", "0", "--token", TOKEN, "--max-batch",
               str(args.max_batch), "--batch-wait-ms", str(args.batch_wait_ms), "--max-queue", str(args.max_queue),
               "--max-upload", args.max_upload]
        for flag in ("model", "threads", "max_memory", "precision"):
            if getattr(args, flag) is not None:
                cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        deadline = time.monotonic() + 300
        while True:
            line = self.proc.stderr.readline()
            if not line or time.monotonic() > deadline:
                raise SystemExit("bench_serve: the server did not start:\n" + "".join(self.lines))
            self.lines.append(line)
            m = re.search(r"listening on (http://\S+?)/? ", line)
            if m:
                self.url = m.group(1).rstrip("/")
                break
        threading.Thread(target=lambda: self.lines.extend(self.proc.stderr), daemon=True).start()
        self.host, port = self.url.split("//")[1].rsplit(":", 1)
        self.port = int(port)

    def status(self, key: str) -> int:
        """VmRSS / VmHWM of the server in bytes."""
        m = re.search(rf"^{key}:\s+(\d+) kB", Path(f"/proc/{self.proc.pid}/status").read_text(), re.M)
        return int(m.group(1)) * 1024

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def post(conn: http.client.HTTPConnection, body: bytes, token: str = TOKEN) -> tuple[int, bytes, float]:
    t0 = time.perf_counter()
    conn.request("POST", "/v1/upscale", body=body, headers={"Authorization": f"Bearer {token}",
                                                            "Content-Type": "application/octet-stream"})
    r = conn.getresponse()
    data = r.read()
    return r.status, data, time.perf_counter() - t0


def run_load(host: str, port: int, bodies: list[bytes], n: int, clients: int, stop: threading.Event | None = None,
             keep: bool = False) -> dict:
    """``n`` uploads (or until ``stop``) from ``clients`` threads; fps, latencies, statuses (and outputs)."""
    lock, counter = threading.Lock(), [0]
    lat: list[float] = []
    statuses: dict[int, int] = {}
    outputs: dict[int, bytes] = {}

    def client() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=600)
        while True:
            with lock:
                i = counter[0]
                if (stop is None and i >= n) or (stop is not None and stop.is_set()):
                    break
                counter[0] += 1
            status, data, seconds = post(conn, bodies[i % len(bodies)])
            with lock:
                lat.append(seconds)
                statuses[status] = statuses.get(status, 0) + 1
                if keep and status == 200:
                    outputs[i % len(bodies)] = data
        conn.close()

    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda _: client(), range(clients)))
    wall = time.perf_counter() - t0
    lat.sort()
    return {"requests": len(lat), "fps": len(lat) / wall, "wall_s": wall, "statuses": statuses,
            "p50_ms": 1000 * lat[len(lat) // 2], "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
            "outputs": outputs}


def phase_throughput(args, server: Server, images) -> dict:
    from srdeploy.runtime.media.video import upscale_frames
    from srdeploy.runtime.open import open_session
    from srdeploy.runtime.settings import TileSettings
    from srdeploy.runtime.upscale import Upscaler

    bodies = [b for b, _ in images]
    session = open_session(resolved(args, args.threads))  # the path the server runs
    upscaler = Upscaler(session, TileSettings(max_memory=args.max_memory_bytes))  # the server's settings
    for _, img in images[:2]:  # warm-up both sides
        upscale_frames(upscaler, [img])
    run_load(server.host, server.port, bodies, args.clients, args.clients)
    pairs, last = [], None
    for block in range(args.blocks):
        t0 = time.perf_counter()
        for i in range(args.requests):
            upscale_frames(upscaler, [images[i % len(images)][1]])
        direct = args.requests / (time.perf_counter() - t0)
        last = run_load(server.host, server.port, bodies, args.requests, args.clients, keep=True)
        pairs.append((direct, last["fps"], last))
        print(f"  block {block + 1}: bench full path {direct:.2f} fps | server {last['fps']:.2f} fps "
              f"(ratio {last['fps'] / direct:.3f}), p50 {last['p50_ms']:.0f} ms, p99 {last['p99_ms']:.0f} ms, "
              f"statuses {last['statuses']}  [load {load()}]", flush=True)
    session.close()
    direct_fps = sum(p[0] for p in pairs) / len(pairs)
    server_fps = sum(p[1] for p in pairs) / len(pairs)
    failed = {s: n for p in pairs for s, n in p[2]["statuses"].items() if s != 200}
    print(f"throughput: server {server_fps:.2f} fps / bench full path {direct_fps:.2f} fps = "
          f"{server_fps / direct_fps:.3f} (target >= 0.90); non-200: {failed or 'none'}")
    return {"direct_fps": direct_fps, "server_fps": server_fps, "ratio": server_fps / direct_fps,
            "ratios": [p[1] / p[0] for p in pairs], "p50_ms": [p[2]["p50_ms"] for p in pairs],
            "p99_ms": [p[2]["p99_ms"] for p in pairs], "non_200": failed, "outputs": last["outputs"]}


def bad_requests(good: bytes) -> dict[str, tuple[bytes, str]]:
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    bomb = (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr
            + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + b"\x00\x00\x00\x00IEND\xaeB`\x82")
    return {"bomb": (bomb, TOKEN), "garbage": (b"not an image " * 100, TOKEN),
            "truncated": (good[: len(good) // 2], TOKEN), "wrong token": (good, "wrong")}


def oversize(server: Server, limit: int) -> tuple[int, float]:
    """Announce ``limit + 1`` bytes and send none: the status line must come back anyway."""
    t0 = time.perf_counter()
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        sock.sendall(f"POST /v1/upscale HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                     f"Content-Length: {limit + 1}\r\n\r\n".encode())
        head = sock.recv(64)
    return int(head.split()[1]), time.perf_counter() - t0


def phase_bad(args, server: Server, images) -> dict:
    from srdeploy.runtime.parsing import parse_bytes

    stop = threading.Event()
    with cf.ThreadPoolExecutor(1) as pool:
        load_future = pool.submit(run_load, server.host, server.port, [b for b, _ in images], 0, args.clients, stop)
        time.sleep(2.0)  # the load is running
        results = {"oversize": oversize(server, parse_bytes(args.max_upload))}
        conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
        for name, (body, token) in bad_requests(images[0][0]).items():
            status, _, seconds = post(conn, body, token)
            results[name] = (status, seconds)
        stop.set()
        loaded = load_future.result()
    for name, (status, seconds) in results.items():
        print(f"  {name:<12} {status} in {seconds * 1000:.0f} ms{'' if seconds < 1 else '  (over 1 s)'}")
    print(f"bad requests: the load's statuses meanwhile {loaded['statuses']} (target: all 200)")
    return {"bad": {k: {"status": s, "seconds": t} for k, (s, t) in results.items()}, "load": loaded["statuses"]}


def phase_leak(args, server: Server, images) -> dict:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=600)
    warm = max(1, args.leak // 10)
    rss = []
    for i in range(args.leak):
        status, _, _ = post(conn, images[i % len(images)][0])
        if status != 200:
            raise SystemExit(f"bench_serve: leak phase request {i} got {status}")
        if i + 1 in (warm, args.leak):
            rss.append(server.status("VmRSS"))
    growth = rss[1] / rss[0] - 1
    hwm = server.status("VmHWM")
    print(f"leak: {args.leak} requests in a row: VmRSS {rss[0] / 2**20:.0f} MiB after {warm}, {rss[1] / 2**20:.0f} MiB "
          f"after {args.leak}: growth {100 * growth:+.2f}% (target <= 5%); VmHWM {hwm / 2**20:.0f} MiB")
    return {"rss_after_warmup": rss[0], "rss_end": rss[1], "growth": growth, "vm_hwm": hwm}


def phase_ray(args, images, reference: dict[int, bytes]) -> dict:
    import ray
    from ray import serve

    from srdeploy.runtime.serve.config import ServeConfig
    from srdeploy.runtime.serve.ray_app import APP_NAME, deploy
    from srdeploy.runtime.settings import RunSettings, TileSettings

    bodies = [b for b, _ in images]
    port = free_port()
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    fps: dict[int, list[float]] = {1: [], 2: []}
    recipe = resolved(args, args.ray_threads)
    run = RunSettings(recipe, TileSettings(max_memory=args.max_memory_bytes))
    server_path = path_of(resolved(args, args.threads))
    # bytes are comparable only when both ran one path: auto may choose differently at another thread count
    identical = True if path_of(recipe) == server_path else None
    print(f"ray: replicas run {path_of(recipe)} at {args.ray_threads} thread(s); the server ran {server_path}",
          flush=True)
    try:
        for block in range(args.blocks):
            for replicas in (1, 2):
                config = ServeConfig(run=run, port=port, replicas=replicas, max_batch=args.max_batch,
                                     batch_wait_ms=args.batch_wait_ms, max_queue=args.max_queue)
                deploy(config)
                while serve.status().applications[APP_NAME].deployments[APP_NAME].replica_states.get("RUNNING") \
                        != replicas:
                    time.sleep(0.5)
                run_load("127.0.0.1", port, bodies, 2 * args.clients, args.clients)  # warm every replica
                r = run_load("127.0.0.1", port, bodies, args.requests, args.clients, keep=True)
                if identical is not None:
                    identical &= all(reference.get(i, out) == out for i, out in r["outputs"].items())
                fps[replicas].append(r["fps"])
                print(f"  block {block + 1}: {replicas} replica(s) {r['fps']:.2f} fps, p50 {r['p50_ms']:.0f} ms, "
                      f"statuses {r['statuses']}  [load {load()}]", flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
    one, two = (sum(v) / len(v) for v in (fps[1], fps[2]))
    print(f"ray: 2 replicas {two:.2f} fps / 1 replica {one:.2f} fps = {two / one:.2f} (target >= 1.6 idle, 2 cores); "
          f"outputs identical to the single-process server: "
          f"{'not comparable (another path)' if identical is None else identical}")
    return {"fps_1": fps[1], "fps_2": fps[2], "ratio": two / one, "identical": identical}


def resolved(args, threads: int | None):
    """The recipe ``--precision`` stands for at ``threads`` (``auto``: this machine's tune profile)."""
    from srdeploy.runtime.open import SessionRecipe, default_model_path
    from srdeploy.runtime.profile import choose

    recipe = SessionRecipe(args.model or str(default_model_path()), threads=threads, precision=args.precision)
    return choose(recipe) if args.precision == "auto" else recipe


def path_of(recipe) -> str:
    return f"{Path(recipe.model).name} {recipe.backend} {recipe.precision or 'exact'}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model file (default: the bundled model)")
    p.add_argument("--size", default="64x64", help="LR image size WxH (default 64x64)")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads, server and bench alike (default 2)")
    p.add_argument("--precision", default="auto",
                   help="server, bench full path and Ray replicas alike (default auto, serve's default)")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=64, help="uploads per timed block (default 64)")
    p.add_argument("--blocks", type=int, default=2, help="alternating block pairs (default 2)")
    p.add_argument("--leak", type=int, default=300, help="requests in a row for the RSS check (default 300)")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--batch-wait-ms", type=float, default=2.0)
    p.add_argument("--max-queue", type=int, default=32)
    p.add_argument("--max-upload", default="1M", help="the server's --max-upload (default 1M)")
    p.add_argument("--max-memory", default=None, help="the server's --max-memory (default: its default)")
    p.add_argument("--ray", action="store_true", help="also measure Ray Serve with 1 and 2 replicas")
    p.add_argument("--ray-threads", type=int, default=1, help="threads per Ray replica (default 1)")
    p.add_argument("--skip", default="", help="phases to skip: throughput,bad,leak")
    p.add_argument("--data", default=os.environ.get("SRDEPLOY_DATA", str(ROOT.parent / "shared" / "data")))
    p.add_argument("--json", default=None, help="write every figure to this file")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    from srdeploy.runtime.parsing import parse_bytes, parse_wh

    args.max_memory_bytes = parse_bytes(args.max_memory) if args.max_memory else None
    w, h = parse_wh(args.size)
    print("bench_serve: " + machine_line())
    print("command: " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), flush=True)
    images = load_images(Path(args.data), (w, h), 14)
    skip = set(filter(None, args.skip.split(",")))
    result: dict = {"date": dt.date.today().isoformat(), "machine": machine_line(), "argv": sys.argv[1:]}
    server = Server(args)
    print(server.lines[0].strip(), flush=True)
    try:
        if "throughput" not in skip:
            result["throughput"] = phase_throughput(args, server, images)
        if "bad" not in skip:
            result["bad_requests"] = phase_bad(args, server, images)
        if "leak" not in skip:
            result["leak"] = phase_leak(args, server, images)
    finally:
        server.stop()
    if args.ray:
        reference = result.get("throughput", {}).get("outputs", {})
        result["ray"] = phase_ray(args, images, reference)
    result.get("throughput", {}).pop("outputs", None)
    print(f"load average at the end: {load()}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
