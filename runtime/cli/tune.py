"""``srdeploy tune``: time this machine's paths for a model and write the profile ``--precision auto`` uses.

Parser only at import time; the handler imports the runtime when it runs.
"""

from __future__ import annotations

import argparse
import sys

from ..parsing import parse_wh


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune",
        help="measure every backend x precision x thread setting for a model on this CPU (for --precision auto)",
        description="Time every path this machine offers for an ONNX model (ONNX Runtime and OpenVINO; the file's "
                    "precision, bf16 where the CPU has it, the INT8 sibling MODEL_int8.onnx beside it) in alternating "
                    "rounds, take each path's quality loss from the INT8 model's metadata or measure it with "
                    "`srdeploy eval` (bf16), print the table and write a per-machine profile to the user cache "
                    "folder. Afterwards --precision auto (the default of upscale, video, batch and serve) runs the "
                    "fastest path whose loss is at most --max-loss, and says so on its first line.")
    p.add_argument("model", nargs="?", metavar="MODEL.onnx",
                   help="the ONNX model (default: the bundled models/*.onnx, or $SRDEPLOY_MODEL)")
    p.add_argument("--max-loss", type=float, default=0.05, metavar="DB",
                   help="largest Y-PSNR loss (dB, worst of the validation sets) --precision auto may take "
                        "(default 0.05; 0 = exact paths only)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="tune for commands run with --threads N (default: for commands without --threads; times "
                        "the physical and the logical core counts)")
    p.add_argument("--size", default="128x128", metavar="WxH", help="LR input timed (default 128x128)")
    p.add_argument("--rounds", type=int, default=5, metavar="N", help="most timing rounds (default 5, at least 3)")
    p.add_argument("--budget", type=float, default=60.0, metavar="S",
                   help="seconds of timing after which no new round starts (default 60; 3 rounds always run)")
    p.add_argument("--val", nargs="+", default=["Set5", "Set14"], metavar="DIR",
                   help="validation folders for measured losses, as srdeploy eval takes them (default Set5 Set14)")
    p.add_argument("--json", metavar="FILE", help="also write the profile to FILE")
    p.add_argument("-q", "--quiet", action="store_true", help="only the table and the result lines")
    p.set_defaults(func=run_tune)


def run_tune(args: argparse.Namespace) -> int:
    from ..atomic import write_json
    from ..open import default_model_path
    from ..tune import TuneConfig, table_lines, tune

    cfg = TuneConfig(model=args.model or str(default_model_path()), threads=args.threads, max_loss=args.max_loss,
                     size=parse_wh(args.size), rounds=args.rounds, budget_s=args.budget, val=tuple(args.val))
    log = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    profile = tune(cfg, log=log)
    for line in table_lines(profile):
        print(line)
    print(f"wrote {profile['path']}")
    if args.json:
        write_json(args.json, profile, indent=2)
    threads = "" if args.threads is None else f" --threads {args.threads}"
    print(f"--precision auto{threads} (the default of upscale, video, batch and serve) now runs the path marked "
          "<- auto")
    return 0
