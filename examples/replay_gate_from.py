"""Replay a run with the annealing gate reading from another step: the run's checkpoint
at --from is copied into OUT with optim.anneal_check_from = --check-from and resumed
(same parameters, AdamW state and data stream), so OUT is the run the config with that
setting would have given, from --from on (tests/test_anneal.py checks this against a
run trained with the setting from the start).

Used in docs/experiments.md section 4 for tries that gave up although an early gate
reading was above the threshold:
python examples/replay_gate_from.py runs/r13/seed=2/tries/try8_seed8002 OUT --from 2000 --check-from 2500
"""

import argparse
import os
import shutil

from sicref import checkpoint as ck
from sicref.config import replace
from sicref.train import train


def replay(run_dir, out, start, check_from, log=None):
    state = ck.load_checkpoint(os.path.join(run_dir, "checkpoints", f"step_{start}.npz"))
    if state["schedule"]["stage"] != 1:
        raise ValueError(f"{run_dir}: the gate had already opened at step {start}")
    if check_from <= start:
        raise ValueError(f"--check-from ({check_from}) must be after --from ({start})")
    if os.path.exists(out):
        raise ValueError(f"{out} exists; choose a new directory")
    cfg = replace(state["config"], optim={"anneal_check_from": check_from})
    os.makedirs(os.path.join(out, "checkpoints"))
    shutil.copy(os.path.join(run_dir, "metrics.jsonl"), os.path.join(out, "metrics.jsonl"))
    path = os.path.join(out, "checkpoints", f"step_{start}.npz")
    ck.save_checkpoint(path, start, state["params"], state["opt_state"], state["plateau"],
                       state["rng_state"], cfg, state["schedule"])
    return train(cfg, out, resume=path, log=log)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("out")
    p.add_argument("--from", dest="start", type=int, required=True,
                   help="a step with a checkpoint, before the gate opened")
    p.add_argument("--check-from", type=int, required=True)
    a = p.parse_args()
    try:
        replay(a.run_dir, a.out, a.start, a.check_from)
    except ValueError as e:
        p.error(str(e))


if __name__ == "__main__":
    main()
