"""Re-initialise some units of a trained network: their connections and start state.

A control experiment (docs/experiments.md, "What the loss prefers"): the units named by
--units get fresh random incoming and outgoing recurrent weights, i.e. the entries
W(v)[i, :] and W(v)[:, i] of the last MLP layer (weights and biases, drawn as in
sicref.model.init_params), and a fresh g0_raw entry; every other parameter is kept. The
result is a sicref checkpoint (step 0, fresh AdamW state, the source's config unless
--config) for `sicref train --init-from`. Example, every other unit of a run freed:

    python examples/free_units.py runs/long_T60 --units even --out runs/freed.npz

or every unit outside the modules that `sicref evaluate` (or `sicref run`) found in its
2 m arena:

    python examples/free_units.py runs/main0/tries/try1_seed1000 \
        --units outside:runs/main0/evaluation/summary.json --out runs/freed.npz
"""

import argparse
import json
import os

import numpy as np

from sicref.checkpoint import load_checkpoint, save_start_checkpoint
from sicref.config import ConfigError, load_config


def units_outside_modules(summary_path, n, step=None, arena="2m"):
    """The units that a `sicref evaluate` summary.json puts in no module in `arena`.

    n: the network's unit count; step (if given): the checkpoint's step, which must be
    the step the summary evaluated."""
    where = f"--units outside:{summary_path}"
    try:
        with open(summary_path) as f:
            summary = json.load(f)
        labels = np.array([r["module"] for r in summary["arenas"][arena]["units"]])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{where}: not an evaluation summary with a {arena} arena "
                         f"({type(e).__name__}: {e})") from None
    if len(labels) != n:
        raise ValueError(f"{where}: the summary has {len(labels)} units, the network {n}")
    if step is not None and summary.get("step") != step:
        raise ValueError(f"{where}: the summary evaluated step {summary.get('step')}, "
                         f"the checkpoint is at step {step}")
    units = np.flatnonzero(labels < 0)
    if units.size == 0:
        raise ValueError(f"{where}: every unit is in a module; nothing to free")
    return units


def parse_units(spec, n, step=None):
    if spec.startswith("outside:"):
        return units_outside_modules(spec[len("outside:"):], n, step)
    if spec == "even":
        return np.arange(0, n, 2)
    if spec == "odd":
        return np.arange(1, n, 2)
    try:
        if "-" in spec:
            a, b = (int(s) for s in spec.split("-"))
            units = np.arange(a, b + 1)
        else:
            units = np.array([int(s) for s in spec.split(",")])
    except ValueError:
        raise ValueError(f"--units {spec!r}: give 'even', 'odd', 'A-B', 'i,j,...' "
                         f"with units in 0..{n - 1}, or 'outside:SUMMARY.json'") from None
    if units.size == 0 or units.min() < 0 or units.max() >= n:
        raise ValueError(f"--units {spec!r}: units must lie in 0..{n - 1}")
    return units


def free_units(params, units, rng):
    """A copy of params with the units' recurrent weights and start entries redrawn."""
    params = {k: v.copy() for k, v in params.items()}
    n = len(params["g0_raw"])
    last = max(int(k[5:]) for k in params if k.startswith("mlp/W"))
    W, b = params[f"mlp/W{last}"], params[f"mlp/b{last}"]
    fan_in = W.shape[0]
    chosen = np.zeros((n, n), bool)
    chosen[units, :] = True
    chosen[:, units] = True
    cols = np.flatnonzero(chosen.ravel())  # W(v)[i, j] is output i * n + j
    bound = 1.0 / np.sqrt(fan_in)
    W[:, cols] = rng.uniform(-bound, bound, size=(fan_in, cols.size))
    b[cols] = rng.uniform(-bound, bound, size=cols.size)
    params["g0_raw"][units] = rng.normal(0.0, 1.0, size=len(units))
    return params


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", help="run directory or checkpoint")
    p.add_argument("--units", required=True,
                   help="'even', 'odd', 'A-B', 'i,j,...', or 'outside:SUMMARY.json' (every "
                   "unit in no module of the summary's 2 m arena)")
    p.add_argument("--config", help="config for the written checkpoint (default: source's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="checkpoint file to write (.npz)")
    a = p.parse_args()
    if os.path.exists(a.out):
        p.error(f"{a.out} exists; choose another --out")
    state = load_checkpoint(a.source)
    try:
        cfg = load_config(a.config) if a.config else state["config"]
        units = parse_units(a.units, len(state["params"]["g0_raw"]), state["step"])
    except (ConfigError, ValueError) as e:
        p.error(str(e))
    params = free_units(state["params"], units, np.random.default_rng(a.seed))
    save_start_checkpoint(a.out, params, cfg, a.seed)
    print(f"freed {len(units)} units of {a.source}; wrote {a.out}")


if __name__ == "__main__":
    main()
