"""Step a stored training state forward exactly as a resumed run would, reading the
annealing gate (sicref.evaluate.grid_check) every k steps; nothing is written to the run.

Used in docs/experiments.md section 3 to check that the 500-step gate misses no brief
lattice: python examples/gate_scan.py RUN_DIR --start 3000 --stop 6000 --every 100
(--lr overrides the learning rate from --start on). With --stored, nothing is trained:
the gate reads the run's own checkpoints step_<k>.npz for k = start, start + every, ...
(section 4: the 32 tries of runs/r13 that gave up, read at 2000-3500:
python examples/gate_scan.py RUN_DIR --start 2000 --stop 3500 --every 500 --stored).
--walks and --walk-steps replace the run's optim.anneal_walks and anneal_walk_steps
(section 4, shorter walks: --walks 400 --walk-steps 100).
"""

import argparse

import numpy as np

from sicref.checkpoint import load_checkpoint
from sicref.evaluate import grid_check
from sicref.train import train_step


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--start", type=int, required=True, help="a step with a checkpoint")
    p.add_argument("--stop", type=int, required=True)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--lr", type=float, help="learning rate from --start on")
    p.add_argument("--stored", action="store_true",
                   help="read the stored checkpoints instead of training")
    p.add_argument("--walks", type=int, help="walks per reading (default: the run's)")
    p.add_argument("--walk-steps", type=int, help="steps per walk (default: the run's)")
    a = p.parse_args()
    if a.every < 1 or a.stop < a.start or (a.stop == a.start and not a.stored):
        p.error("need --every >= 1 and --stop > --start (>= with --stored)")
    if (a.walks is not None and a.walks < 1) or (a.walk_steps is not None
                                                 and a.walk_steps < 1):
        p.error("--walks and --walk-steps must be >= 1")

    def read(params, cfg):
        o = cfg.optim
        return grid_check(params, cfg, n_walks=a.walks or o.anneal_walks,
                          n_steps=a.walk_steps or o.anneal_walk_steps)

    if a.stored:
        for step in range(a.start, a.stop + 1, a.every):
            state = load_checkpoint(f"{a.run_dir}/checkpoints/step_{step}.npz")
            fraction, median = read(state["params"], state["config"])
            print(f"step {step}: grid fraction {fraction:.3f}, median score60 {median:.2f}",
                  flush=True)
        return
    state = load_checkpoint(f"{a.run_dir}/checkpoints/step_{a.start}.npz")
    cfg, params, opt = state["config"], state["params"], state["opt_state"]
    plateau = dict(state["plateau"])
    if a.lr is not None:
        plateau["lr"] = a.lr
    rng = np.random.Generator(np.random.PCG64())
    rng.bit_generator.state = state["rng_state"]
    for step in range(a.start + 1, a.stop + 1):
        params, opt, plateau, _ = train_step(params, opt, plateau, rng, cfg, step)
        if step % a.every == 0:
            fraction, median = read(params, cfg)
            print(f"step {step}: grid fraction {fraction:.2f}, median score60 {median:.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
