"""Where one training step of the `laptop` preset spends its time, at chosen T.

Each T runs in a fresh process with one BLAS thread and the allocator settings the
main job's tries use (sicref.train.child_env). The process trains --warmup steps
untimed, then --steps steps under cProfile, and reports milliseconds per step for the
step as a whole and for its parts (the cumulative time of the functions below), plus
the whole timed loop's wall time without the profiler (a second pass of --steps steps)
so that the profiler's overhead can be seen. Numbers are medians over --repeats
processes.

    python3 benchmarks/profile_step.py                      # T = 15 and 45
    python3 benchmarks/profile_step.py --seq-len 15 30 45 --steps 100 --repeats 3
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# (label, module, function name): parts of train_step, reported by cumulative time
PARTS = [
    ("train_step", "sicref/train.py", "train_step"),
    ("loss and gradient", "sicref/train.py", "loss_and_grad"),
    ("MLP forward (W of each base velocity)", "sicref/model.py", "transition_matrices"),
    ("rollout forward", "sicref/model.py", "permuted_preactivations"),
    ("rollout backward", "sicref/model.py", "vjp"),
    ("separation (value and gradient)", "sicref/fastloss.py", "separation_sum"),
    ("invariance (value and gradient)", "sicref/fastloss.py", "invariance_sum"),
    ("close pairs", "sicref/fastloss.py", "near_pairs"),
    ("AdamW", "sicref/optim.py", "adamw_update"),
    ("clip", "sicref/optim.py", "clip_by_global_norm"),
    ("finite check", "sicref/optim.py", "all_finite"),
    ("batch sampling", "sicref/data.py", "sample_batch"),
]


def child(seq_len, steps, warmup, seed):
    import cProfile
    import pstats
    import time

    import numpy as np

    from sicref.config import preset, replace
    from sicref.model import init_params
    from sicref.optim import adamw_init, plateau_init
    from sicref.train import train_step

    cfg = replace(preset("laptop"), data={"seq_len": seq_len})
    rng = np.random.default_rng(seed)
    params = init_params(rng, cfg.model.n_units, cfg.model.hidden, cfg.model.n_layers)
    state, plateau = adamw_init(params), plateau_init(cfg.optim.lr)
    step = 0

    def run(n):
        nonlocal params, state, plateau, step
        for _ in range(n):
            step += 1
            params, state, plateau, _ = train_step(params, state, plateau, rng, cfg, step)

    run(warmup)
    t0 = time.perf_counter()
    run(steps)
    plain = (time.perf_counter() - t0) / steps
    prof = cProfile.Profile()
    prof.enable()
    run(steps)
    prof.disable()
    stats = pstats.Stats(prof).stats
    out = {"plain_ms": 1e3 * plain}
    for label, path, name in PARTS:
        cum = sum(v[3] for (file, _, func), v in stats.items()
                  if func == name and file.endswith(path))
        out[label] = 1e3 * cum / steps
    print(json.dumps(out))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq-len", type=int, nargs="+", default=[15, 45])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if a.child:
        child(a.seq_len[0], a.steps, a.warmup, a.seed)
        return 0
    for name, n in (("steps", a.steps), ("repeats", a.repeats)):
        if n < 1:
            ap.error(f"--{name} must be >= 1, got {n}")
    from sicref.train import child_env
    env = child_env(threads=1)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    rows = []
    for T in a.seq_len:
        runs = []
        for r in range(a.repeats):
            res = subprocess.run([sys.executable, __file__, "--child", "--seq-len", str(T),
                                  "--steps", str(a.steps), "--warmup", str(a.warmup),
                                  "--seed", str(a.seed + r)],
                                 env=env, capture_output=True, text=True)
            if res.returncode:
                sys.exit(f"profile at T = {T} failed:\n{res.stderr}")
            runs.append(json.loads(res.stdout.strip().splitlines()[-1]))
        rows.append((T, {k: statistics.median(r[k] for r in runs) for k in runs[0]}))
    labels = ["plain_ms"] + [p[0] for p in PARTS]
    print(f"ms per step, medians of {a.repeats} processes, {a.steps} steps each, "
          f"one BLAS thread")
    print("| part | " + " | ".join(f"T = {T}" for T, _ in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for k in labels:
        name = "step without the profiler" if k == "plain_ms" else k
        print(f"| {name} | " + " | ".join(f"{r[k]:.1f}" for _, r in rows) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
