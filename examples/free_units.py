"""Re-initialise some units of a trained network: their connections and start state.

A control experiment (docs/experiments.md, "What the loss prefers"): the units named by
--units get fresh random incoming and outgoing recurrent weights, i.e. the entries
W(v)[i, :] and W(v)[:, i] of the last MLP layer (weights and biases, drawn as in
sicref.model.init_params), and a fresh g0_raw entry; every other parameter is kept. The
result is a sicref checkpoint (step 0, fresh AdamW state, the source's config unless
--config) for `sicref train --init-from`. Example, every other unit of a run freed:

    python examples/free_units.py runs/long_T60 --units even --out runs/freed.npz

or every unit outside the modules that `sicref evaluate` (or `sicref run`) found in its
2 m arena (`sicref run --grow-steps N` frees these and more: every unit but the best
half of the module, at least 28, sicref.grow):

    python examples/free_units.py runs/main0/tries/try1_seed1000 \
        --units outside:runs/main0/evaluation/summary.json --out runs/freed.npz
"""

import argparse
import os

import numpy as np

from sicref.checkpoint import load_checkpoint, save_start_checkpoint
from sicref.config import ConfigError, load_config
from sicref.grow import free_units, units_outside_modules


def parse_units(spec, n, step=None):
    if spec.startswith("outside:"):
        units = units_outside_modules(spec[len("outside:"):], n, step,
                                      where=f"--units {spec}")
        if units.size == 0:
            raise ValueError(f"--units {spec}: every unit is in a module; nothing to free")
        return units
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
