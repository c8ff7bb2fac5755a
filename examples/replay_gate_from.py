"""Replay a run with the annealing gate changed: the run's checkpoint at --from is
copied into OUT with optim.anneal_check_from = --check-from (and any --set changes) and
resumed (same parameters, AdamW state and data stream), so OUT is the run the config
with those settings would have given, from --from on (tests/test_anneal.py checks this
against a run trained with the setting from the start).

Used in docs/experiments.md section 4 for tries that gave up although an early gate
reading was above the threshold:
python examples/replay_gate_from.py runs/r13/seed=2/tries/try8_seed8002 OUT --from 2000 --check-from 2500
and for lattices the gate opened on but did not confirm, with another annealing:
python examples/replay_gate_from.py RUN OUT --from 2000 --check-from 2500 --set optim.anneal_lr=3e-5
"""

import argparse
import os
import shutil

from sicref import checkpoint as ck
from sicref.config import replace
from sicref.sweep import parse_override
from sicref.train import train


def replay(run_dir, out, start, check_from, log=None, sets=()):
    state = ck.load_checkpoint(os.path.join(run_dir, "checkpoints", f"step_{start}.npz"))
    if state["schedule"]["stage"] != 1:
        raise ValueError(f"{run_dir}: the gate had already opened at step {start}")
    if check_from <= start:
        raise ValueError(f"--check-from ({check_from}) must be after --from ({start})")
    if os.path.exists(out):
        raise ValueError(f"{out} exists; choose a new directory")
    changes = {"optim": {"anneal_check_from": check_from}}
    for text in sets:
        section, field, values = parse_override(text, state["config"])
        if len(values) != 1:
            raise ValueError(f"--set {text!r}: give one value")
        changes.setdefault(section, {})[field] = values[0]
    cfg = replace(state["config"], **changes)
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
    p.add_argument("--set", nargs="*", default=[], metavar="SECTION.FIELD=VALUE",
                   help="more config changes, e.g. optim.anneal_lr=3e-5")
    a = p.parse_args()
    try:
        replay(a.run_dir, a.out, a.start, a.check_from, sets=a.set)
    except ValueError as e:
        p.error(str(e))


if __name__ == "__main__":
    main()
