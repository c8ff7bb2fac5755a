"""Screen many SIC configs quickly with the independent PyTorch implementation.

The search for a CPU default needs long runs (tens of thousands of steps) of many
configs. This script trains each config with the PyTorch model and losses of
`examples/crosscheck_torch.py` (float32, on a GPU if there is one), with the same
initialisation, data, AdamW, clipping, accumulation and plateau schedule as sicref,
and scores checkpoints along the way with sicref's own evaluation (SPEC §7, 2 m arena).
It only proposes settings: every claim in docs/results.md comes from sicref runs.

    python examples/screen_torch.py --preset small --mode oat \
        --set loss.sigma_g=0.3,0.5 train.seed=0,1 --steps 20000 --jobs 8 --out runs/screen

PyTorch is optional: without it the script says so and exits with code 3.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from crosscheck_torch import SICNet, sic_losses, torch  # noqa: E402

from sicref.config import config_to_dict, load_config, preset, replace, save_config  # noqa: E402
from sicref.data import sample_batch  # noqa: E402
from sicref.evaluate import WalkConfig, evaluate  # noqa: E402
from sicref.model import init_params, mlp_sizes  # noqa: E402
from sicref.optim import plateau_init, plateau_update  # noqa: E402
from sicref.sweep import grid_configs, one_at_a_time_configs  # noqa: E402

EXIT_NO_TORCH = 3


def loss_settings(cfg):
    lo = cfg.loss
    return {k: getattr(lo, k) for k in ("sigma_x", "sigma_g", "lambda_sep", "lambda_inv",
                                         "lambda_cap", "lambda_coniso", "reduction")}


def train_and_score(cfg, out, device, eval_every, walk, max_seconds=None):
    """Train cfg in PyTorch float32; score the 2 m arena every eval_every steps (and
    at the end, which comes early once max_seconds of wall time have passed)."""
    torch.manual_seed(cfg.train.seed)
    rng = np.random.default_rng(cfg.train.seed)
    m = cfg.model
    params = init_params(rng, m.n_units, m.hidden, m.n_layers)
    meta = {"mlp_sizes": mlp_sizes(m.n_units, m.hidden, m.n_layers), "n_units": m.n_units,
            "norm_eps": m.norm_eps}
    net = SICNet.from_arrays(meta, params).to(device=device, dtype=torch.float32)
    o = cfg.optim
    opt = torch.optim.AdamW(net.parameters(), lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps,
                            weight_decay=o.weight_decay)
    plateau = plateau_init(o.lr)
    loss = loss_settings(cfg)
    d = cfg.data
    rows, t0 = [], time.time()
    log = open(os.path.join(out, "train.log"), "a")
    for step in range(1, cfg.train.steps + 1):
        opt.zero_grad()
        totals = []
        for _ in range(o.accumulation):
            b = sample_batch(rng, d.batch_size, d.seq_len, d.vmax, d.mode)
            v = torch.from_numpy(b.velocities).to(device=device, dtype=torch.float32)
            g0, states = net(v)
            parts = sic_losses(g0, states, b.positions, b.velocities, loss)
            (parts["total"] / o.accumulation).backward()
            totals.append({k: float(x) for k, x in parts.items()})
        if o.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(net.parameters(), o.clip_norm)
        for group in opt.param_groups:
            group["lr"] = plateau["lr"]
        opt.step()
        values = {k: float(np.mean([t[k] for t in totals])) for k in totals[0]}
        if not np.isfinite(values["total"]):
            print(f"step {step}: non-finite loss", file=log, flush=True)
            break
        plateau = plateau_update(plateau, values["total"], o.plateau_factor,
                                 o.plateau_patience, o.plateau_window,
                                 o.plateau_threshold, o.min_lr)
        if step % 500 == 0:
            print(json.dumps({"step": step, **values, "lr": plateau["lr"],
                              "seconds": time.time() - t0}), file=log, flush=True)
        out_of_time = max_seconds is not None and time.time() - t0 > max_seconds
        if step % eval_every == 0 or step == cfg.train.steps or out_of_time:
            arrays = net.to_arrays()
            np.savez(os.path.join(out, "params_latest.npz"), **arrays)
            summary, _ = evaluate(arrays, cfg, arenas=(2.0,), seed=0, walk=walk)
            a = summary["arenas"]["2m"]
            rows.append({"step": step, "seconds": time.time() - t0, **values,
                         "grid_fraction": a["grid_fraction"],
                         "hexagonal_fraction": a["hexagonal_fraction"],
                         "median_score60": a["median_score60_active"],
                         "n_active": a["n_active"],
                         "modules": a["modules"]})
            print(json.dumps(rows[-1]), file=log, flush=True)
        if out_of_time:
            break
    return rows


def child(args):
    cfg = load_config(args.one)
    os.makedirs(args.out, exist_ok=True)
    walk = WalkConfig(n_walks=100, n_steps=400)
    rows = train_and_score(cfg, args.out, args.device, args.eval_every, walk,
                           args.max_seconds)
    with open(os.path.join(args.out, "rows.json"), "w") as f:
        json.dump({"config": config_to_dict(cfg), "rows": rows}, f)
    return 0


def parent(args):
    base = load_config(args.config) if args.config else preset(args.preset)
    if args.steps:
        base = replace(base, train={"steps": args.steps})
    make = one_at_a_time_configs if args.mode == "oat" else grid_configs
    configs = make(base, args.set)
    os.makedirs(args.out, exist_ok=True)
    print(f"screen: {len(configs)} configs, {args.jobs} at a time, device {args.device}",
          flush=True)

    def one(item):
        name, cfg = item
        run_dir = os.path.join(args.out, name)
        if os.path.exists(os.path.join(run_dir, "rows.json")):
            return name
        os.makedirs(run_dir, exist_ok=True)
        save_config(cfg, os.path.join(run_dir, "config.json"))
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        subprocess.call([sys.executable, os.path.abspath(__file__), "--one",
                         os.path.join(run_dir, "config.json"), "--out", run_dir,
                         "--device", args.device, "--eval-every", str(args.eval_every)]
                        + (["--max-seconds", str(args.max_seconds)] if args.max_seconds
                           else []),
                        env=env)
        return name

    with ThreadPoolExecutor(args.jobs) as pool:
        for name in pool.map(one, configs):
            print(f"  finished {name}", flush=True)
    write_table(args.out, [n for n, _ in configs])
    return 0


def write_table(out, names):
    lines = ["| run | step | s | total | grid frac | hex frac | median g60 | active | "
             "modules | periods (m) |", "|" + "---|" * 10]
    for name in names:
        path = os.path.join(out, name, "rows.json")
        if not os.path.exists(path):
            lines.append(f"| {name} | failed |" + " |" * 8)
            continue
        with open(path) as f:
            rows = json.load(f)["rows"]
        for r in rows:
            periods = ", ".join(f"{p:.2f}" for p in r["modules"]["periods"])
            lines.append(f"| {name} | {r['step']} | {r['seconds']:.0f} | {r['total']:.4f} | "
                         f"{r['grid_fraction']:.2f} | {r['hexagonal_fraction']:.2f} | "
                         f"{r['median_score60']:.2f} | {r['n_active']} | "
                         f"{len(r['modules']['periods'])} | {periods} |")
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("--preset", default="small")
    p.add_argument("--config")
    p.add_argument("--set", nargs="*", default=[])
    p.add_argument("--mode", choices=["grid", "oat"], default="oat")
    p.add_argument("--steps", type=int)
    p.add_argument("--jobs", type=int, default=4)
    p.add_argument("--eval-every", type=int, default=5000)
    p.add_argument("--max-seconds", type=float, help="training wall-time cap per config")
    p.add_argument("--device", default="cuda" if torch is not None and
                   torch.cuda.is_available() else "cpu")
    p.add_argument("--out", required=True)
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if torch is None:
        print("screen_torch.py needs PyTorch (pip install torch); skipped.")
        return EXIT_NO_TORCH
    return child(args) if args.one else parent(args)


if __name__ == "__main__":
    sys.exit(main())
