"""Teach the RNN an ideal code by supervision, then hand it to SIC training.

Not SIC: this is a control experiment (docs/experiments.md, "What the loss prefers"). The
network of a preset is trained to reproduce an ideal code of sicref.idealcodes at every
step of the preset's training batches, by the mean squared distance between its states
g_t (and g_0) and the code of the positions they belong to. The result is written as a
sicref checkpoint (fresh AdamW state, step 0) that `sicref evaluate` reads and
`sicref train --init-from` continues with the SIC loss, so one can ask whether SIC keeps
a code it did not find by itself, and at what loss. Example (two modules of 64 units):

    python examples/teach_ideal_code.py --module 0.33 1.0 --module 0.81 1.0 \
        --steps 3000 --out runs/taught2.npz

With --free K the first K units get no target: the taught modules share the others.
"""

import argparse
import os
import time

import autograd.numpy as anp
import numpy as np
from autograd import value_and_grad

from sicref.checkpoint import save_start_checkpoint
from sicref.config import ConfigError, preset, replace
from sicref.data import sample_batch
from sicref.idealcodes import Module, ideal_code, validate_modules
from sicref.model import init_params, rollout_permuted
from sicref.optim import adamw_init, adamw_update, clip_by_global_norm
from sicref.losses import sic_loss


def teacher_loss(params, batch, target0, targets, norm_eps, free=0):
    """Mean squared distance to the code; the first `free` units have no target."""
    g0, states = rollout_permuted(params, batch.base, batch.perm, norm_eps)
    n = states.shape[-1]
    d = anp.reshape(states, (-1, n))[:, free:] - targets
    return anp.mean(anp.sum(d * d, axis=1)) + anp.sum((g0[free:] - target0) ** 2)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="laptop")
    p.add_argument("--module", nargs=2, type=float, action="append", required=True,
                   metavar=("PERIOD", "BETA"),
                   help="one ideal module (period in m, field sharpness beta); repeat")
    p.add_argument("--free", type=int, default=0,
                   help="leave the first FREE units without a target (the modules share the rest)")
    p.add_argument("--seq-len", type=int, help="training trajectory length (default: preset's)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="checkpoint file to write (.npz)")
    a = p.parse_args()
    if os.path.exists(a.out):
        p.error(f"{a.out} exists; choose another --out")
    try:
        cfg = preset(a.preset)
        if a.seq_len is not None:
            cfg = replace(cfg, data={"seq_len": a.seq_len})
    except ConfigError as e:
        p.error(str(e))
    if a.steps < 1 or not a.lr > 0:
        p.error(f"--steps {a.steps} must be >= 1 and --lr {a.lr} > 0")
    if not 0 <= a.free < cfg.model.n_units:
        p.error(f"--free {a.free}: must be in 0..{cfg.model.n_units - 1}")
    taught = cfg.model.n_units - a.free
    k = len(a.module)
    sides = [int(np.sqrt(taught // k))] * k
    if sum(s * s for s in sides) != taught:
        p.error(f"{k} modules of equal square size cannot fill the {taught} taught units")
    try:
        modules = validate_modules(Module(per, s, beta)
                                   for (per, beta), s in zip(a.module, sides))
    except ValueError as e:
        p.error(f"--module: {e}")
    rng = np.random.default_rng(a.seed)
    params = init_params(rng, cfg.model.n_units, cfg.model.hidden)
    opt = adamw_init(params)
    target0 = ideal_code(np.zeros((1, 2)), modules)[0]
    grad = value_and_grad(teacher_loss)
    t0 = time.time()
    for step in range(1, a.steps + 1):
        batch = sample_batch(rng, cfg.data.batch_size, cfg.data.seq_len, cfg.data.vmax)
        targets = ideal_code(batch.positions.reshape(-1, 2), modules)
        value, g = grad(params, batch, target0, targets, cfg.model.norm_eps, a.free)
        if not np.isfinite(value):
            raise SystemExit(f"non-finite teacher loss at step {step}")
        g, _ = clip_by_global_norm(g, 1.0)
        params, opt = adamw_update(params, g, opt, a.lr)
        if step % 100 == 0 or step == a.steps:
            g0, states = rollout_permuted(params, batch.base, batch.perm, cfg.model.norm_eps)
            total, parts = sic_loss(states, batch.positions, cfg.loss)
            print(f"step {step}: teacher {value:.4f}, SIC total {float(total):.4f} (sep "
                  f"{float(parts['separation']):.3f}, inv {float(parts['invariance']):.3f}, "
                  f"cap {float(parts['capacity']):.3f}), {step / (time.time() - t0):.1f} steps/s",
                  flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    save_start_checkpoint(a.out, params, cfg, a.seed)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
