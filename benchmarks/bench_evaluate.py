"""Whole-process wall time and peak memory of `sicref evaluate` for several --workers.

The main job evaluates its lattice in 2, 3 and 4 m arenas (bins of 1/16 m, the default
walks) after its tries are over, when every core is free; `--workers W` rolls the walks
out in W threads with one BLAS thread each. This script trains one short run of the
preset (the rollout's cost depends on the sizes, not on what was learnt), then, for
each W, runs `python -m sicref evaluate RUN --arena 2 3 4 --bin-size 0.0625 --threads 1
--workers W` --repeats times as fresh processes, one at a time, and reports the median
wall time (start to exit, imports included) and the largest peak RSS (os.wait4's
ru_maxrss of that process). It also checks that every W wrote the same summary.json.

    python3 benchmarks/bench_evaluate.py                    # laptop, W = 1 and 2, 3 repeats
    python3 benchmarks/bench_evaluate.py --workers 1 2 4 --repeats 5 --json out.json

Run it on an otherwise idle machine: threads only help when cores are free.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def child_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def train_run(preset_name, workdir):
    from sicref.config import config_to_dict, preset, replace

    cfg = replace(preset(preset_name), optim={"anneal_lr": 0.0, "anneal_give_up": 0},
                  train={"steps": 2, "checkpoint_every": 2, "seed": 0})
    cfg_path = os.path.join(workdir, "config.json")
    with open(cfg_path, "w") as f:
        json.dump(config_to_dict(cfg), f)
    run = os.path.join(workdir, "run")
    subprocess.run([sys.executable, "-m", "sicref", "train", "--config", cfg_path,
                    "--out", run, "--threads", "1"], env=child_env(), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return run


def one_evaluation(run, out, workers, arenas, over_training):
    cmd = [sys.executable, "-m", "sicref", "evaluate", run, "--arena", *arenas,
           "--bin-size", "0.0625", "--threads", "1", "--workers", str(workers),
           "--out", out]
    if over_training:
        cmd.append("--over-training")
    start = time.perf_counter()
    p = subprocess.Popen(cmd, env=child_env(), stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - start
    err = p.stderr.read().decode()
    p.stderr.close()
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode:
        raise SystemExit(f"sicref evaluate failed:\n{err[-2000:]}")
    with open(os.path.join(out, "summary.json")) as f:
        summary = f.read()
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024.0}, summary


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="laptop")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--arena", nargs="+", default=["2", "3", "4"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--over-training", action="store_true",
                    help="also read the run's checkpoints (evaluate --over-training)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    if args.repeats < 1 or min(args.workers) < 1:
        ap.error("--repeats and --workers must be at least 1")

    print(f"# sicref evaluate, preset {args.preset}, arenas {' '.join(args.arena)} m, "
          f"bins of 1/16 m, one BLAS thread; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs")
    print("| workers | median wall s | min-max s | peak RSS MiB | repeats |")
    print("|---|---|---|---|---|")
    results, summaries = [], set()
    with tempfile.TemporaryDirectory() as d:
        run = train_run(args.preset, d)
        for w in args.workers:
            runs = []
            for r in range(args.repeats):
                timing, summary = one_evaluation(run, os.path.join(d, f"w{w}_r{r}"), w,
                                                 args.arena, args.over_training)
                runs.append(timing)
                summaries.add(summary)
            walls = [x["wall_s"] for x in runs]
            row = {"workers": w, "repeats": runs, "median_wall_s": statistics.median(walls),
                   "peak_rss_mb": max(x["peak_rss_mb"] for x in runs)}
            results.append(row)
            print(f"| {w} | {row['median_wall_s']:.1f} | {min(walls):.1f}-{max(walls):.1f} "
                  f"| {row['peak_rss_mb']:.0f} | {args.repeats} |", flush=True)
    same = len(summaries) == 1
    print("summary.json the same for every run: " + ("yes" if same else "NO"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "same_summary": same}, f, indent=1)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
