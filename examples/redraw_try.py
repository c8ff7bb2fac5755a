"""What `sicref run --redraw --grow-steps N` does after a try gives up, on one try.

The try's latest checkpoint has every unit's recurrent weights and start entry redrawn
(sicref.grow.write_redraw_start, drawn from the try's seed) and trains under
sicref.grow.redraw_config (T = 45, lr 1e-4, its own gate) into OUT/redrawn. If that gate
confirms a lattice, the lattice is rescaled (sicref.grow.rescale: 1000 steps at T = 30
from the confirmed checkpoint) into OUT/rescaled and, unless the rescale lost it
(sicref.grow.rescale_held), evaluated in 2, 3 and 4 m with 800 walks of 100 steps
(OUT/evaluation); with --grow-steps N the stage follows (the best
half of the module kept, the rest freed, up to N steps at T = 45; OUT/grow). Used on
the tries of earlier main jobs in docs/experiments.md, "The sequence in the main job":

    python examples/redraw_try.py runs/seed14/tries/try0_seed14 --seed 14 \\
        --out runs/seed14_try0_redraw --grow-steps 6000 --grow-until-two

--seed is the main job's seed (it draws the evaluation walks and the stage's freeing
and data, as in the main job); the redraw and the rescale use the try's own seed.
Calling it again continues where it stopped.
"""

import argparse
import os
import sys

from sicref.checkpoint import load_checkpoint, resolve_checkpoint
from sicref.evaluate import evaluate_run, headline
from sicref.grow import GROW_WALK, redraw_config, rescale_held, write_redraw_start
from sicref.run import (MAIN_ARENAS, MAIN_BIN_SIZE, RESCALED_EVALUATION, gate_lines,
                        grow_stage, rescale_redrawn)
from sicref.train import train
from sicref.tries import try_status


def main(argv=None, log=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("try_run", metavar="TRY", help="the try's run directory or checkpoint")
    p.add_argument("--seed", type=int, required=True, help="the main job's seed")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--grow-steps", type=int, default=0, metavar="N")
    p.add_argument("--grow-until-two", action="store_true")
    a = p.parse_args(argv)
    log = log or (lambda line: print(line, flush=True))
    if a.grow_steps < 0:
        p.error(f"--grow-steps must be >= 0, got {a.grow_steps}")
    source = resolve_checkpoint(a.try_run)
    try_cfg = load_checkpoint(source)["config"]
    cfg = redraw_config(try_cfg)
    redrawn = os.path.join(a.out, "redrawn")
    latest = os.path.join(redrawn, "checkpoints", "latest.npz")
    os.makedirs(a.out, exist_ok=True)
    if os.path.exists(latest):
        train(cfg, redrawn, resume=latest, log=log)
    else:
        start = write_redraw_start(source, os.path.join(a.out, "redrawn_start.npz"), cfg)
        log(f"redrawn: every unit of {source} (seed {cfg.train.seed}), T = "
            f"{cfg.data.seq_len}, lr {cfg.optim.lr:g} -> {redrawn}")
        train(cfg, redrawn, init_from=start, overwrite=True, log=log)
    status = try_status(redrawn, cfg)[0]
    lines = [f"redrawn try: {status}"] + gate_lines(redrawn, cfg)
    if status != "caught":
        for line in lines:
            log(line)
        return 0
    run_dir, before, after, _ = rescale_redrawn(
        redrawn, try_cfg, os.path.join(a.out, "rescaled"), "the redrawn try", log)
    lines.append(f"rescaled: gate reading {before:.0%} -> {after:.0%}")
    if not rescale_held(before, after):
        # the main job counts it as lost and goes on to its next try
        for line in lines + ["the rescale lost the lattice; not evaluated"]:
            log(line)
        return 0
    summary = evaluate_run(run_dir, os.path.join(a.out, "evaluation"), MAIN_ARENAS,
                           seed=a.seed, overwrite=True, log=log, bin_size=MAIN_BIN_SIZE,
                           reuse=True, **RESCALED_EVALUATION)
    lines += [f"rescaled ({run_dir}), evaluated with {GROW_WALK.n_walks} walks of "
              f"{GROW_WALK.n_steps} steps:"] + headline(summary)
    if a.grow_steps:
        grown = grow_stage({"status": "caught", "run_dir": run_dir}, summary, a.out,
                           a.grow_steps, a.seed, log, until_two=a.grow_until_two)
        lines += grown[2]
    for line in lines:
        log(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
