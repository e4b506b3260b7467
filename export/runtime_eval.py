"""Evaluation of a deployed model file through the runtime, on the paper's protocol.

``srdeploy eval`` measures checkpoints with the training code (``train.evaluate``). A deployed
model (FP32/FP16/INT8 ONNX on any backend, a TensorRT engine, OpenVINO IR) is measured here:
the same folders, LR made by the same MATLAB-style bicubic, the same Y-PSNR/SSIM with border
crop = scale, but the SR image comes from ``runtime.upscale.Upscaler`` on an open ``Session``:
the code path (tiling, uint8 rounding) that ``srdeploy upscale`` runs. This module lives in
export because it needs both the runtime and train, and train must not import anything of ours.
"""

from __future__ import annotations

from srdeploy.runtime.settings import RunSettings


def evaluate_model_file(settings: RunSettings, folders, *, progress: bool = False) -> tuple[list, dict]:
    """Evaluate a model file through the runtime on HR image folders.

    Args:
        settings: the ``RunSettings``: the recipe (any model file the runtime opens, backend,
            device, precision, threads) and the tiling ``srdeploy upscale`` would use.
        folders: benchmark folders of HR images (LR by bicubic downscaling, as ``srdeploy eval``).
        progress: show a progress bar.

    Returns:
        ``(results, record)``: a ``SetResult`` per folder and a JSON-able description of what
        ran (model file, backend, device, precision, tiling; with tile "auto", the tiles the
        memory budget chose) for the result file.
    """
    from srdeploy.runtime.open import open_session
    from srdeploy.runtime.upscale import Upscaler
    from srdeploy.train.evaluate import evaluate

    recipe, tiling = settings.recipe, settings.tiling
    chosen: list = []

    with open_session(recipe) as sess:
        up = Upscaler(sess, tiling)

        def upscale(lr):
            sr = up.upscale(lr, order="RGB")
            tile = list(up.last_tile) if isinstance(up.last_tile, tuple) else up.last_tile
            if tile not in chosen:
                chosen.append(tile)
            return sr

        results = evaluate(upscale, folders, scale=sess.info.scale, progress=progress)
        record = {"model": str(recipe.model), "backend": sess.backend, "device": sess.device,
                  "precision": sess.precision, "scale": sess.info.scale, "tile": tiling.tile,
                  "tile_pad": up.tile_pad, "batch": tiling.batch, "threads": recipe.threads}
        if tiling.auto:
            record.update(max_memory=up.budget, tiles_chosen=chosen)
    return results, record
