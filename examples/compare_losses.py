"""Mean SIC loss (and its parts) of several checkpoints on the same batches, scored
with one config: which code does the objective prefer at this size?

Used in docs/experiments.md section 3 (lattice against bands):
python examples/compare_losses.py CKPT [CKPT ...] [--seq-len 15] [--vmax 0.15]
"""

import argparse
import os

import numpy as np

from sicref.checkpoint import load_checkpoint
from sicref.config import load_config
from sicref.data import sample_batch
from sicref.train import batch_objective


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--config", help="config whose loss scores them (default: laptop "
                   "preset with sigma_g 0.4, lambda_cap 0.5, the first laptop preset)")
    p.add_argument("--seq-len", type=int, default=15)
    p.add_argument("--vmax", type=float, default=0.15)
    p.add_argument("--batches", type=int, default=60)
    p.add_argument("--seed", type=int, default=999)
    a = p.parse_args()
    first_laptop = os.path.join(os.path.dirname(__file__), "configs",
                                "laptop_constant_lr.json")
    cfg = load_config(a.config or first_laptop)
    for path in a.checkpoints:
        params = load_checkpoint(path)["params"]
        rng = np.random.default_rng(a.seed)
        parts = []
        for _ in range(a.batches):
            batch = sample_batch(rng, cfg.data.batch_size, a.seq_len, a.vmax, cfg.data.mode)
            values = {}
            batch_objective(params, batch, cfg, values)
            parts.append(values)
        means = {k: np.mean([v[k] for v in parts])
                 for k in ("total", "separation", "invariance", "capacity")}
        print(path, " ".join(f"{k} {m:.4f}" for k, m in means.items()))


if __name__ == "__main__":
    main()
