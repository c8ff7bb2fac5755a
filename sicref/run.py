"""The main job: train the default preset, then evaluate it in 2, 3 and 4 m arenas."""

import os
import sys

from .checkpoint import read_jsonl
from .config import DEFAULT_PRESET, preset, replace
from .evaluate import evaluate_run, headline, write_over_training
from .train import train

MAIN_ARENAS = (2.0, 3.0, 4.0)
MAIN_BIN_SIZE = 2.0 / 32  # 32 bins in the 2 m arena, the same bin size in 3 and 4 m


def main_job(preset_name=DEFAULT_PRESET, out="runs/default", seed=None, steps=None,
             overwrite=False, log=None):
    """Train (or continue an interrupted run in out), evaluate, write figures.

    Returns the evaluation summary. A finished run in out is evaluated again, not
    retrained; a different config in out is refused.
    """
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    cfg = preset(preset_name)
    changes = {k: v for k, v in (("seed", seed), ("steps", steps)) if v is not None}
    if changes:
        cfg = replace(cfg, train=changes)
    latest = os.path.join(out, "checkpoints", "latest.npz")
    resume = latest if (os.path.exists(latest) and not overwrite) else None
    log(f"sicref run: preset {preset_name!r}, {cfg.train.steps} steps, N={cfg.model.n_units}"
        f", B={cfg.data.batch_size}, T={cfg.data.seq_len} -> {out}"
        + (" (continuing)" if resume else ""))
    train(cfg, out, resume=resume, overwrite=overwrite, log=log)
    eval_dir = os.path.join(out, "evaluation")
    summary = evaluate_run(out, eval_dir, MAIN_ARENAS, seed=cfg.train.seed, overwrite=True,
                           log=log, bin_size=MAIN_BIN_SIZE)
    # SPEC §10: gridness is not monotonic in training; show it for every checkpoint.
    log("gridness of every checkpoint (2 m arena):")
    write_over_training(out, eval_dir, 2.0, seed=cfg.train.seed, log=log)
    log(f"figures and summary.json in {eval_dir}")
    for line in gate_lines(out, cfg) + headline(summary):
        log(line)
    return summary


def gate_lines(run_dir, cfg):
    """What the annealing gate did in a run (nothing when annealing is off)."""
    if cfg.optim.anneal_lr <= 0:
        return []
    checks = read_jsonl(os.path.join(run_dir, "gridness.jsonl"))
    opened = [c for c in checks if c.get("switch")]
    if opened:
        c = opened[0]
        return [f"annealing: the gate opened at step {c['step']} (grid fraction "
                f"{c['grid_fraction']:.0%} >= {cfg.optim.anneal_grid_fraction:.0%}); "
                f"lr {cfg.optim.anneal_lr:g} with a fresh AdamW from then on"
                + (f", halving every {cfg.optim.anneal_half_life} steps"
                   if cfg.optim.anneal_half_life else "")]
    if not checks:
        return ["annealing: no gate reading yet"]
    best = max(checks, key=lambda c: c["grid_fraction"])
    return [f"annealing: the gate never opened in {len(checks)} readings (best "
            f"{best['grid_fraction']:.0%} at step {best['step']}, needs "
            f"{cfg.optim.anneal_grid_fraction:.0%}); no lattice was caught. Whether a seed "
            f"passes through one is chance-like at this size: docs/results.md lists seeds "
            f"that do (try --seed 1)"]


def add_run_commands(sub):
    p = sub.add_parser("run", help="main job: train the default preset, evaluate, figures")
    p.add_argument("--preset", default=DEFAULT_PRESET)
    p.add_argument("--out", default="runs/default", metavar="DIR")
    p.add_argument("--seed", type=int)
    p.add_argument("--steps", type=int)
    p.add_argument("--overwrite", action="store_true",
                   help="start over instead of continuing a run found in DIR")
    p.set_defaults(func=_cmd_run)


def _cmd_run(args):
    main_job(args.preset, args.out, args.seed, args.steps, args.overwrite)
    return 0
