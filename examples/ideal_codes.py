"""Does the SIC loss itself prefer one grid module or two? Ideal codes, no network.

For each setting (trajectory length T, sigma_g, lambda_cap; the rest from a preset), the
best one-module code (10 x 10 = 100 units) and the best two-module code (7 x 7 units
each, 98 in all) are fitted by Nelder-Mead on the same fixed training batches
(sicref.idealcodes), and the one-module loss is also scanned over the period. Writes
ideal_codes.json (every fit), ideal_codes.md (a table) and ideal_codes.png (loss against
period, with the two-module optimum marked) to --out. docs/experiments.md ("What the
loss prefers") ran:

    python examples/ideal_codes.py --seq-len 15 60 --out runs/ideal
"""

import argparse
import dataclasses
import json
import os
import sys
import time

import numpy as np

from sicref.checkpoint import load_checkpoint
from sicref.config import ConfigError, preset, replace
from sicref.idealcodes import LossProbe, Module, fit_code


def one_module_starts(n_side):
    return [(Module(p, n_side, b),) for p, b in ((0.5, 0.7), (1.0, 0.7), (1.5, 2.0))]


def two_module_starts(best_one, n_side, ratios):
    m = best_one.modules[0]
    return [(dataclasses.replace(m, n_side=n_side),
             dataclasses.replace(m, n_side=n_side, period=m.period * r)) for r in ratios]


def describe(fit):
    return [dict(period=m.period, beta=m.beta, threshold=m.threshold, weight=m.weight,
                 n_units=m.n_units) for m in fit.modules]


def score_networks(probe, paths, log):
    rows = []
    for path in paths:
        state = load_checkpoint(path)
        parts = probe.network_parts(state["params"], state["config"].model.norm_eps)
        total = probe.total(parts=parts)
        log(f"  network {path} (step {state['step']}): total {total:.5f} (sep {parts[0]:.4f}, "
            f"inv {parts[1]:.4f}, cap {parts[2]:.4f})")
        rows.append(dict(checkpoint=path, step=state["step"], total=total, parts=parts,
                         trained_seq_len=state["config"].data.seq_len))
    return rows


def run_setting(cfg, args, log):
    probe = LossProbe(cfg.data, cfg.loss, n_batches=args.batches, seed=args.seed)
    setting = dict(seq_len=cfg.data.seq_len, batch_size=cfg.data.batch_size,
                   sigma_g=cfg.loss.sigma_g, lambda_cap=cfg.loss.lambda_cap,
                   networks=score_networks(probe, args.checkpoint, log))
    if args.skip_fits:
        return setting
    t0 = time.time()
    one = fit_code(probe, one_module_starts(10), args.max_evaluations)
    log(f"  one module: {one.modules[0].period:.3f} m, total {one.total:.5f} "
        f"({time.time() - t0:.0f} s)")
    periods = np.exp(np.linspace(np.log(0.25), np.log(3.0), args.scan_points))
    scan = [probe.total((dataclasses.replace(one.modules[0], period=float(p)),))
            for p in periods]
    fits = []
    for start in two_module_starts(one, 7, args.ratios):
        fit = fit_code(probe, [start], 2 * args.max_evaluations)
        p = sorted(m.period for m in fit.modules)
        log(f"  two modules from ratio {start[1].period / start[0].period:.2f}: "
            f"{p[0]:.3f} and {p[1]:.3f} m, total {fit.total:.5f} ({time.time() - t0:.0f} s)")
        fits.append(fit)
    two = min(fits, key=lambda f: f.total)
    return dict(setting, one=dict(total=one.total, parts=one.parts, modules=describe(one)),
                two=dict(total=two.total, parts=two.parts, modules=describe(two)),
                two_from_each_start=[dict(total=f.total, modules=describe(f)) for f in fits],
                scan=dict(period=periods.tolist(), total=scan))


def table(rows):
    out = ["| T | B | sigma_g | lambda_cap | one module: m | loss | two modules: m (weight) "
           "| loss | two minus one |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "one" not in r:
            continue
        o, t = r["one"], r["two"]
        mods = sorted(t["modules"], key=lambda m: m["period"])
        two = ", ".join(f"{m['period']:.2f} ({m['weight']:.2f})" for m in mods)
        out.append(f"| {r['seq_len']} | {r['batch_size']} | {r['sigma_g']} | {r['lambda_cap']} "
                   f"| {o['modules'][0]['period']:.2f} | {o['total']:.4f} | {two} "
                   f"| {t['total']:.4f} | {t['total'] - o['total']:+.4f} |")
    return "\n".join(out) + "\n"


def short_name(path):
    """The run directory's name for a checkpoint path (or the file's stem)."""
    parts = [q for q in os.path.normpath(path).split(os.sep)
             if q not in ("checkpoints", "latest.npz", "tries", "runs", ".")]
    return parts[-1] if parts else path


def figure(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for r in rows:
        if "one" not in r:
            continue
        label = f"T={r['seq_len']}, sigma_g={r['sigma_g']}, lambda_cap={r['lambda_cap']}"
        line, = ax.plot(r["scan"]["period"], r["scan"]["total"], label=label)
        o = r["one"]
        ax.plot(o["modules"][0]["period"], o["total"], "o", color=line.get_color())
        for m in r["two"]["modules"]:
            ax.plot(m["period"], r["two"]["total"], "*", ms=11, color=line.get_color())
        for net in r["networks"]:
            if net["trained_seq_len"] != r["seq_len"]:
                continue  # only networks trained at this length
            ax.axhline(net["total"], ls=":", lw=1, color=line.get_color())
            ax.annotate(short_name(net["checkpoint"]), (1.0, net["total"]),
                        xycoords=("axes fraction", "data"), fontsize=6, va="bottom",
                        ha="right", color=line.get_color())
    fitted = [r for r in rows if "one" in r]
    if fitted:  # the scan climbs steeply at long periods; keep the minima readable
        ax.set_ylim(top=max(r["one"]["total"] for r in fitted) + 0.08)
    ax.set_xscale("log")
    ticks = [0.25, 0.5, 1.0, 2.0, 3.0]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.set_xticks([], minor=True)
    ax.set_xlabel("period of the one module (m)")
    ax.set_ylabel("SIC loss (sep + inv + cap terms)")
    ax.set_title("one-module codes (curve, best: dot); best two-module code (stars at its "
                 "two periods);\ntrained networks on the same batches (dotted)", fontsize=9)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="laptop")
    p.add_argument("--seq-len", type=int, nargs="+", default=[15])
    p.add_argument("--batch-size", type=int, nargs="+",
                   help="one per --seq-len (default: the preset's B x 15 / T, at least 4, "
                        "so that every setting has about the same number of points)")
    p.add_argument("--sigma-g", type=float, nargs="+")
    p.add_argument("--lambda-cap", type=float, nargs="+")
    p.add_argument("--ratios", type=float, nargs="+", default=[1.05, 1.4, 2.0],
                   help="period ratios the two-module fits start from")
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-evaluations", type=int, default=400)
    p.add_argument("--scan-points", type=int, default=25)
    p.add_argument("--checkpoint", nargs="+", default=[],
                   help="also score these networks on the same batches, in every setting")
    p.add_argument("--skip-fits", action="store_true",
                   help="only score the --checkpoint networks")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    if a.batches < 1 or a.max_evaluations < 1 or a.scan_points < 2:
        p.error("need --batches >= 1, --max-evaluations >= 1 and --scan-points >= 2")
    if any(not r > 0 for r in a.ratios):
        p.error(f"--ratios {a.ratios}: every ratio must be > 0")
    if a.skip_fits and not a.checkpoint:
        p.error("--skip-fits needs --checkpoint")
    if a.batch_size and len(a.batch_size) != len(a.seq_len):
        p.error("--batch-size needs one value per --seq-len")
    if os.path.exists(os.path.join(a.out, "ideal_codes.json")):
        p.error(f"{a.out}/ideal_codes.json exists; choose another --out")
    try:
        base = preset(a.preset)
    except ConfigError as e:
        p.error(str(e))
    os.makedirs(a.out, exist_ok=True)
    rows = []
    for i, T in enumerate(a.seq_len):
        B = a.batch_size[i] if a.batch_size else max(4, round(base.data.batch_size * 15 / T))
        for sg in a.sigma_g or [base.loss.sigma_g]:
            for cap in a.lambda_cap or [base.loss.lambda_cap]:
                try:
                    cfg = replace(base, data={"seq_len": T, "batch_size": B},
                                  loss={"sigma_g": sg, "lambda_cap": cap})
                except ConfigError as e:
                    p.error(str(e))
                print(f"T={T} B={B} sigma_g={sg} lambda_cap={cap}", flush=True)
                rows.append(run_setting(cfg, a, lambda s: print(s, flush=True)))
                with open(os.path.join(a.out, "ideal_codes.json"), "w") as f:
                    json.dump(rows, f, indent=1)
    with open(os.path.join(a.out, "ideal_codes.md"), "w") as f:
        f.write(table(rows))
    if not a.skip_fits:
        figure(rows, os.path.join(a.out, "ideal_codes.png"))
    sys.stdout.write(table(rows))
    print(f"wrote {a.out}/ideal_codes.json, ideal_codes.md, ideal_codes.png")


if __name__ == "__main__":
    main()
