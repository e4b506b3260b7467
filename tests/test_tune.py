"""srdeploy tune, its per-machine profile, --precision auto and the INT8 sibling (issue 27).

The conftest gives every test an empty user cache folder (XDG_CACHE_HOME), so profiles written
here never meet a real one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from srdeploy.cli import main
from srdeploy.runtime import profile as prof
from srdeploy.runtime.metadata import sha256_file
from srdeploy.runtime.open import SessionRecipe, open_session

BUNDLED = Path(__file__).resolve().parent.parent / "models" / "srresnet_x4.onnx"


def _has_openvino() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture()
def model(tiny_srresnet_x2, tmp_path) -> Path:
    """A private copy (profiles and siblings are keyed by the file and its folder)."""
    dst = tmp_path / "tiny.onnx"
    shutil.copyfile(tiny_srresnet_x2, dst)
    return dst


def make_sibling(model: Path, *, source_sha: str | None = None, loss=(0.04, 0.03)) -> Path:
    """``NAME_int8.onnx`` beside ``model`` carrying quantize's metadata (the graph stays float: only
    the resolution logic reads it; ONNX Runtime runs it under the file's int8 label)."""
    m = onnx.load(str(model))
    props = {p.key: p.value for p in m.metadata_props}
    props["srdeploy.precision"] = "int8"
    props[prof.KEY_INT8] = json.dumps({"fp32_sha256": source_sha or sha256_file(model), "validation": {
        "Set5": {"fp32_psnr": 30.0, "int8_psnr": 30.0 - loss[0], "loss_db": loss[0]},
        "Set14": {"fp32_psnr": 27.0, "int8_psnr": 27.0 - loss[1], "loss_db": loss[1]}}})
    del m.metadata_props[:]
    for k, v in props.items():
        m.metadata_props.add(key=k, value=v)
    out = prof.int8_sibling_name(model)
    onnx.save(m, str(out))
    return out


def row(backend, precision, model, ms, *, loss=None, source="exact", threads=2, baseline=False, error=None):
    return {"backend": backend, "precision": precision, "model": str(model), "threads": threads, "median_ms": ms,
            "speedup": None, "loss_db": {} if source == "exact" else loss, "loss_source": source, "error": error,
            "baseline": baseline, "model_sha256": sha256_file(model)}


def write_profile(model: Path, rows: list[dict], *, threads=None, max_loss=0.05, **override) -> Path:
    """A profile as ``srdeploy tune`` writes it, for this machine (or ``override`` parts)."""
    base = next(r for r in rows if r["baseline"])["median_ms"]
    for r in rows:
        r["speedup"] = base / r["median_ms"] if r["median_ms"] else None
    profile = {"format": prof.FORMAT, "created": "2026-12-04T10:00:00+00:00", "machine": prof.cpu_identity(),
               "versions": prof.library_versions(), "model": {"path": str(model), "sha256": sha256_file(model),
                                                              "precision": "fp32"},
               "max_loss": max_loss, "val": ["Set5", "Set14"], "candidates": rows, **override}
    return prof.save_profile(profile, prof.profile_path(sha256_file(model), threads))


# ----------------------------------------------------------------------------- INT8 sibling
def test_bundled_int8_sibling_is_found_and_opened():
    sibling, why = prof.find_int8_sibling(BUNDLED)
    assert sibling == BUNDLED.with_name("srresnet_x4_int8.onnx"), why
    with open_session(BUNDLED, precision="int8", threads=1) as s:
        assert Path(s.path) == sibling and s.precision == "int8"
        assert "srresnet_x4_int8.onnx" in s.details["note"]


def test_quantize_output_beside_a_model_is_its_sibling(model):
    assert prof.find_int8_sibling(model) == (None, f"no tiny_int8.onnx beside it (srdeploy quantize tiny.onnx "
                                                   f"-o tiny_int8.onnx)")
    sibling = make_sibling(model)
    assert prof.find_int8_sibling(model) == (sibling, "")
    recipe = SessionRecipe(str(model), precision="int8").resolved()
    assert recipe.model == str(sibling) and recipe.precision == "int8"
    assert recipe.backend == "onnxruntime" and "tiny_int8.onnx" in recipe.note


def test_sibling_of_another_model_is_refused(model):
    make_sibling(model, source_sha="0" * 64)
    sibling, why = prof.find_int8_sibling(model)
    assert sibling is None and "quantized from another file" in why
    with pytest.raises(ValueError, match="tiny.onnx: precision int8 needs its INT8 model, and tiny_int8.onnx was "
                                         "quantized from another file"):
        SessionRecipe(str(model), precision="int8").resolved()


# ----------------------------------------------------------------------------- --precision auto
def _auto(model, **kw) -> SessionRecipe:
    return SessionRecipe(str(model), precision="auto", **kw).resolved()


def test_without_a_profile_auto_is_the_exact_default_and_says_tune(model):
    r = _auto(model)
    assert (r.backend, r.precision, r.threads, r.model) == ("onnxruntime", None, None, str(model))
    assert r.note.startswith("precision auto -> exact default (onnxruntime") and f"srdeploy tune {model}" in r.note
    assert "at 3 threads" in _auto(model, threads=3).note and "--threads 3" in _auto(model, threads=3).note
    # tune covers ONNX on the CPU: elsewhere auto is what the file computes, with nothing to say
    assert prof.choose(SessionRecipe(str(model), precision="auto", device="cuda:0")).note == ""


def test_auto_takes_the_fastest_path_within_max_loss(model):
    sibling = make_sibling(model)
    rows = [row("onnxruntime", "fp32", model, 100.0, baseline=True),
            row("openvino", "fp32", model, 80.0),
            row("openvino", "bf16", model, 30.0, loss={"Set5": 0.2, "Set14": 0.1}, source="measured"),  # too lossy
            row("openvino", "int8", sibling, 40.0, loss={"Set5": 0.04, "Set14": 0.03}, source="quantize metadata"),
            row("onnxruntime", "bf16", model, None, source="measured", error="no bf16")]
    write_profile(model, rows)
    r = _auto(model)
    assert (r.backend, r.precision, r.threads, r.model) == ("openvino", "int8", 2, str(sibling))
    assert r.note == ("precision auto -> openvino int8 (tiny_int8.onnx), 2 threads: 2.50x onnxruntime fp32 on this "
                      "CPU (srdeploy tune, 2026-12-04), measured loss 0.040 dB (Set5, quantize metadata); "
                      "--precision fp32 for exact")
    # a fixed backend keeps auto on it; a larger --max-loss at tune time admits bf16
    r = _auto(model, backend="onnxruntime")
    assert (r.backend, r.precision) == ("onnxruntime", "fp32") and "1.00x onnxruntime fp32" in r.note
    write_profile(model, rows, max_loss=0.25)
    assert _auto(model).precision == "bf16"
    # the same model elsewhere (profiles are keyed by content) without the tuned INT8 file beside it
    write_profile(model, rows)
    (model.parent / "copy").mkdir()
    copy = Path(shutil.copy(model, model.parent / "copy" / "tiny.onnx"))
    r = _auto(copy)
    assert r.model == str(copy) and r.precision is None and "tuned INT8 model is not beside this file" in r.note


def test_auto_keeps_the_default_unless_clearly_faster(model):
    rows = [row("onnxruntime", "fp32", model, 100.0, baseline=True), row("openvino", "fp32", model, 97.0)]
    write_profile(model, rows)
    r = _auto(model)
    assert (r.backend, r.precision) == ("onnxruntime", "fp32")  # 1.03x is within noise
    assert "no faster path" in r.note
    rows[1]["median_ms"] = 90.0
    write_profile(model, rows)
    assert _auto(model).backend == "openvino"


def test_stale_or_foreign_profile_is_not_used(model):
    rows = [row("onnxruntime", "fp32", model, 100.0, baseline=True), row("openvino", "fp32", model, 50.0)]
    write_profile(model, rows, machine={**prof.cpu_identity(), "model": "Some Other CPU"})
    r = _auto(model)
    assert r.backend == "onnxruntime" and r.precision is None
    assert "stale, it was measured on another CPU" in r.note and "re-run `srdeploy tune" in r.note
    write_profile(model, rows, versions={**prof.library_versions(), "onnxruntime": "0.0.1"})
    assert "onnxruntime changed (0.0.1 ->" in _auto(model).note


def test_profiles_are_per_thread_request(model):
    rows = [row("onnxruntime", "fp32", model, 100.0, baseline=True, threads=1),
            row("openvino", "fp32", model, 50.0, threads=1)]
    write_profile(model, rows, threads=1)
    assert _auto(model).backend == "onnxruntime" and "no tune profile" in _auto(model).note
    r = _auto(model, threads=1)
    assert (r.backend, r.threads) == ("openvino", 1)
    # the default profile serves --threads N when it measured its baseline at N (same run)
    write_profile(model, [row("onnxruntime", "fp32", model, 100.0, baseline=True, threads=2),
                          row("openvino", "bf16", model, 40.0, threads=2, loss={"Set5": 0.0}, source="measured"),
                          row("openvino", "fp32", model, 30.0, threads=4)])
    assert (_auto(model, threads=2).precision, _auto(model).precision) == ("bf16", "fp32")
    assert "no tune profile for this model at 3 threads" in _auto(model, threads=3).note



def test_batch_and_ray_serve_choose_auto_once_for_every_worker(model, tmp_path, monkeypatch):
    """batch workers and Ray Serve replicas open their own sessions: the driver resolves auto once
    (``RunSettings.pinned``) and ships the concrete choice with its note, so they never mix paths."""
    import sys
    import types

    from srdeploy.cli import build_parser
    from srdeploy.runtime.batch import driver
    from srdeploy.runtime.cli.batch import run_batch_cli
    from srdeploy.runtime.cli.serve import serve_config
    from srdeploy.runtime.serve import ray_app

    sibling = make_sibling(model)
    write_profile(model, [row("onnxruntime", "fp32", model, 100.0, baseline=True, threads=1),
                          row("openvino", "int8", sibling, 40.0, threads=1, loss={"Set5": 0.04},
                              source="quantize metadata")], threads=1)
    seen = {}

    def fake_run_batch(cfg):
        seen["batch"] = cfg
        raise LookupError("stop before Ray")

    monkeypatch.setattr(driver, "run_batch", fake_run_batch)
    args = build_parser().parse_args(["batch", "-i", str(tmp_path), "-o", str(tmp_path / "out"), "--model", str(model)])
    with pytest.raises(LookupError):
        run_batch_cli(args)
    cfg = seen["batch"]
    recipe = cfg.run.recipe
    assert (recipe.model, recipe.backend, recipe.precision) == (str(sibling), "openvino", "int8")
    assert (cfg.settings.model, cfg.settings.precision) == (str(sibling), "int8")  # what plan.json records
    assert recipe.note.startswith("precision auto -> openvino int8 (tiny_int8.onnx), 1 threads: 2.50x")

    # serve --ray: the same, with a stand-in Ray (init, deploy, then Ctrl-C)
    config = serve_config(build_parser().parse_args(["serve", "--ray", "--model", str(model), "--threads", "1"]))
    assert config.run.recipe.precision == "auto"  # the default, as in upscale
    fake_serve = types.SimpleNamespace(shutdown=lambda: None)
    fake_ray = types.SimpleNamespace(init=lambda **kw: None, shutdown=lambda: None, serve=fake_serve)
    monkeypatch.setitem(sys.modules, "ray", fake_ray)
    monkeypatch.setattr(ray_app, "deploy", lambda c: seen.setdefault("serve", c))
    monkeypatch.setattr(ray_app.time, "sleep", lambda s: (_ for _ in ()).throw(KeyboardInterrupt()))
    lines = []
    with pytest.raises(KeyboardInterrupt):
        ray_app.run_ray(config, log=lines.append)
    recipe = seen["serve"].run.recipe
    assert (recipe.model, recipe.backend, recipe.precision) == (str(sibling), "openvino", "int8")
    assert "precision auto -> openvino int8" in lines[0] and recipe.note in lines[0]
    # without a profile: the exact default, pinned too (no worker reads profiles on its own)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty"))
    pinned = config.run.pinned()
    assert (pinned.recipe.precision, pinned.recipe.model) == (None, str(model))
    assert "no tune profile" in pinned.recipe.note and pinned.pinned() is pinned

@pytest.mark.skipif(not _has_openvino(), reason="openvino is not installed")
def test_upscale_first_line_names_the_choice(model, tmp_path, capsys):
    img = (np.random.default_rng(0).random((12, 15, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "in.png"), img)

    def first_line(*extra):
        out = tmp_path / f"out{len(extra)}.png"
        assert main(["upscale", "-q", "-i", str(tmp_path / "in.png"), "-o", str(out), "--model", str(model),
                     *extra]) == 0
        return capsys.readouterr().err.splitlines()[0], cv2.imread(str(out))

    line, plain = first_line()
    assert " on onnxruntime " in line and "precision auto -> exact default" in line  # the default is auto
    write_profile(model, [row("onnxruntime", "fp32", model, 100.0, baseline=True),
                          row("openvino", "fp32", model, 50.0)])
    line, auto = first_line("--overwrite")
    assert " on openvino " in line and "precision auto -> openvino fp32, 2 threads: 2.00x" in line
    assert np.abs(auto.astype(int) - plain.astype(int)).max() <= 1  # exact paths: float rounding only
    line, _ = first_line("--precision", "fp32", "--overwrite")
    assert " on onnxruntime " in line and "precision auto" not in line


# ----------------------------------------------------------------------------- bf16
def test_onnxruntime_refuses_bf16_with_the_reason(model):
    with pytest.raises(ValueError, match="no bf16 mode for this model's convolutions.*--backend openvino"):
        open_session(model, backend="onnxruntime", precision="bf16")


@pytest.mark.skipif(not _has_openvino(), reason="openvino is not installed")
def test_openvino_bf16_where_the_cpu_has_it(model):
    import openvino as ov

    x = np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32)
    if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        with pytest.raises(RuntimeError, match="bf16 is not supported"):
            open_session(model, backend="openvino", precision="bf16")
        return
    with open_session(model, backend="openvino", precision="bf16") as s, \
            open_session(model, backend="onnxruntime") as ref:
        assert s.precision == "bf16" and s.details["inference_precision"] == "bf16"
        diff = np.abs(s.infer(x) - ref.infer(x))
        assert 0 < diff.max() < 0.05  # bf16 rounding: visible, small


# ----------------------------------------------------------------------------- tune itself
def test_tune_measures_writes_and_auto_follows(model, tmp_path):
    from srdeploy.runtime.tune import TuneConfig, table_lines, tune

    sibling = make_sibling(model, loss=(0.01, 0.02))
    asked = []

    def fake_eval(path, sets, *, backend, precision, threads):  # eval's protocol is tested in test_eval_psnr
        asked.append((Path(path).name, backend, precision))
        return {"Set5": 30.0 - (0.003 if precision else 0), "Set14": 27.0 - (0.002 if precision else 0)}

    cfg = TuneConfig(str(model), threads=1, size=(24, 24), rounds=3, budget_s=0)
    p = tune(cfg, log=lambda s: None, evaluate=fake_eval)
    assert Path(p["path"]) == prof.profile_path(sha256_file(model), 1) and Path(p["path"]).is_file()
    assert json.loads(Path(p["path"]).read_text())["candidates"] == p["candidates"]
    assert p["machine"] == prof.cpu_identity() and p["model"]["sha256"] == sha256_file(model)
    assert p["int8_sibling"]["path"] == str(sibling) and p["timing"]["rounds"] == 3
    rows = {(r["backend"], r["precision"]): r for r in p["candidates"]}
    assert rows[("onnxruntime", "fp32")]["baseline"] and rows[("onnxruntime", "fp32")]["speedup"] == 1.0
    assert "no bf16 mode" in rows[("onnxruntime", "bf16")]["error"]
    assert rows[("onnxruntime", "int8")]["loss_db"] == {"Set5": 0.01, "Set14": 0.02}
    assert all(r["median_ms"] > 0 for r in p["candidates"] if not r["error"])
    bf16 = rows.get(("openvino", "bf16"))
    if bf16 and not bf16["error"] and bf16["speedup"] >= prof.MIN_GAIN:
        # the FP32 reference came from the sibling's metadata: only paths without a known loss were evaluated
        assert ("tiny.onnx", "openvino", "bf16") in asked and bf16["loss_db"] == {"Set5": 0.003, "Set14": 0.002}
    assert all(backend == "openvino" for _, backend, _ in asked)  # quantize measured ORT INT8's loss already
    ov_int8 = rows.get(("openvino", "int8"))
    if ov_int8 and not ov_int8["error"]:  # OpenVINO's INT8 kernels are not ORT's: its own loss, or none
        assert ov_int8["loss_source"] != "quantize metadata"
    text = "\n".join(table_lines(p))
    assert "(default)" in text or "<- auto" in text
    assert "no INT8 path: no x_int8.onnx" in "\n".join(table_lines({**p, "int8_sibling": {"none": "no x_int8.onnx"}}))
    pick, _ = prof.best_candidate(p)
    r = _auto(model, threads=1)
    assert (r.backend, r.precision, r.model) == (pick["backend"], pick["precision"], pick["model"])


def test_int8_loss_from_metadata_only_for_the_backend_quantize_measured_on(model):
    """quantize measures the INT8 loss through ONNX Runtime; OpenVINO's INT8 kernels round differently
    (the bundled model: -0.046 vs -0.045 dB on Set5), so its row is measured by tune like bf16's."""
    from srdeploy.runtime.tune import QUANTIZE_BACKEND, TuneConfig, measure_losses, plan_candidates

    loss = {"Set5": 0.045, "Set14": 0.032}
    rows = plan_candidates(TuneConfig(str(model), threads=1), model, "fp32", model.with_name("x_int8.onnx"), loss)
    int8 = {r["backend"]: r for r in rows if r["precision"] == "int8"}
    assert QUANTIZE_BACKEND == "onnxruntime" and int8["onnxruntime"]["loss_db"] == loss
    assert int8["onnxruntime"]["loss_source"] == "quantize metadata"
    assert int8["openvino"]["loss_db"] is None and int8["openvino"]["loss_source"] == "measured"
    asked = []

    def fake_eval(path, sets, *, backend, precision, threads):
        asked.append((backend, precision))
        return {"Set5": 29.954, "Set14": 27.168}

    ov = dict(int8["openvino"], median_ms=50.0, speedup=3.0)
    measure_losses([dict(rows[0], median_ms=150.0, speedup=1.0), ov], TuneConfig(str(model)),
                   {"Set5": 30.0, "Set14": 27.2}, lambda s: None, fake_eval)
    assert asked == [("openvino", "int8")] and ov["loss_db"] == {"Set5": 0.046, "Set14": 0.032}


def test_eval_psnr_runs_srdeploy_eval(model, tmp_path):
    from srdeploy.runtime.tune import eval_psnr

    folder = tmp_path / "Val"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(folder / f"{i}.png"), (rng.random((24, 20, 3)) * 255).astype(np.uint8))
    got = eval_psnr(str(model), (str(folder),), backend="onnxruntime", precision=None, threads=1)
    assert list(got) == ["Val"] and 5 < got["Val"] < 60
    with pytest.raises(RuntimeError, match="Missing"):
        eval_psnr(str(model), (str(tmp_path / "Missing"),), backend="onnxruntime", precision=None, threads=1)


def test_tune_cli_refuses_bad_input(tmp_path, capsys):
    assert main(["tune", str(tmp_path / "nope.onnx")]) == 1
    assert "nope.onnx: model file does not exist" in capsys.readouterr().err
    assert main(["tune", str(BUNDLED), "--max-loss", "-1"]) == 1
    assert "--max-loss must be >= 0 dB" in capsys.readouterr().err


def test_bf16_loss_is_measured_against_the_same_protocol(model):
    from srdeploy.runtime.tune import TuneConfig, measure_losses

    asked = []

    def fake_eval(path, sets, *, backend, precision, threads):
        asked.append((backend, precision))
        return {"Set5": 30.01 if precision is None else 30.0, "Set14": 27.02 if precision is None else 27.0}

    def rows():
        return [dict(row("onnxruntime", "fp32", model, 100.0, baseline=True), speedup=1.0),
                dict(row("openvino", "bf16", model, 50.0, loss=None, source="measured"), speedup=2.0),
                dict(row("openvino", "bf16", model, 98.0, loss=None, source="measured"), speedup=1.02)]

    cfg = TuneConfig(str(model))
    measured = rows()
    measure_losses(measured, cfg, None, lambda s: None, fake_eval)  # no reference yet: FP32 measured first
    assert asked == [("onnxruntime", None), ("openvino", "bf16")]
    assert measured[1]["loss_db"] == {"Set5": 0.01, "Set14": 0.02} and measured[1]["loss_source"] == "measured"
    assert measured[2]["loss_db"] is None and measured[2]["loss_source"].startswith("not measured: not 1.05x")
    asked.clear()
    again = rows()
    measure_losses(again, cfg, {"Set5": 30.05, "Set14": 27.0}, lambda s: None, fake_eval)
    assert asked == [("openvino", "bf16")] and again[1]["loss_db"] == {"Set5": 0.05, "Set14": 0.0}
    failing = rows()
    measure_losses(failing, cfg, None, lambda s: None, lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no Set5")))
    assert failing[1]["loss_db"] is None and failing[1]["loss_source"] == "not measured: no Set5"


@pytest.mark.skipif(not _has_openvino(), reason="openvino is not installed")
def test_bench_compares_the_auto_path(model, capsys):
    write_profile(model, [row("onnxruntime", "fp32", model, 100.0, baseline=True),
                          row("openvino", "fp32", model, 50.0)])
    assert main(["bench", "--model", str(model), "--precision", "fp32", "--size", "16x16", "--iters", "2",
                 "--warmup", "1", "--no-full-path", "-q", "--compare", f"{model}@auto:auto",
                 "--compare", f"{model}@onnxruntime:fp32"]) == 0
    err = capsys.readouterr().err
    assert "compare  openvino     fp32" in err and "compare  onnxruntime  fp32" in err
    from srdeploy.runtime.bench import parse_compare

    assert parse_compare(f"{model}@ov:bf16") == (str(model), "openvino", "bf16")
    with pytest.raises(ValueError, match="precision 'fp8' is not one of"):
        parse_compare(f"{model}@openvino:fp8")
