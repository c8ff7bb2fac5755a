"""Continue a run that gave up for want of confirmation (optim.anneal_confirm), as if the
rule were off: the run's last checkpoint is copied into OUT with anneal_confirm = 0 and
its give-up cleared, then resumed (same parameters, AdamW state and data stream) to
--steps.

Used in docs/experiments.md section 4 to check what a rejected lattice would have become:
python examples/continue_past_give_up.py RUN_DIR OUT --steps 7000
"""

import argparse
import os
import shutil

from sicref import checkpoint as ck
from sicref.config import replace
from sicref.train import train


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("out")
    p.add_argument("--steps", type=int, required=True)
    a = p.parse_args()
    state = ck.load_checkpoint(os.path.join(a.run_dir, "checkpoints", "latest.npz"))
    if state["schedule"]["stage"] != 2 or state["schedule"]["gave_up_step"] is None:
        p.error(f"{a.run_dir} did not give up after an annealing switch")
    if os.path.exists(a.out):
        p.error(f"{a.out} exists; choose a new directory")
    cfg = replace(state["config"], optim={"anneal_confirm": 0}, train={"steps": a.steps})
    schedule = dict(state["schedule"], gave_up_step=None)
    os.makedirs(os.path.join(a.out, "checkpoints"))
    for name in ("metrics.jsonl", "gridness.jsonl"):
        shutil.copy(os.path.join(a.run_dir, name), os.path.join(a.out, name))
    path = os.path.join(a.out, "checkpoints", f"step_{state['step']}.npz")
    ck.save_checkpoint(path, state["step"], state["params"], state["opt_state"],
                       state["plateau"], state["rng_state"], cfg, schedule)
    train(cfg, a.out, resume=path)


if __name__ == "__main__":
    main()
