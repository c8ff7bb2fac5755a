"""Whole-process throughput of `sicref train`: wall time, steps/s and peak memory.

Each repeat starts --jobs fresh `python -m sicref train` processes side by side,
launched exactly as the main job launches its tries (sicref.train.train_command: one
BLAS thread each, glibc's MALLOC_* settings unless --plain-malloc), each training the preset for --steps
steps from its own seed with the annealing gate off, so the time is training alone
(data, rollout, losses, gradients, clipping, AdamW, logging and checkpoints). It
reports, per repeat, the slowest process's wall time (start to exit, including Python
start-up and imports), its steps/s over the whole process, and the largest peak RSS
(ru_maxrss of the children); then the medians over repeats.

    python3 benchmarks/bench_train.py                       # laptop preset, 1 and 2 jobs
    python3 benchmarks/bench_train.py --jobs 2 --steps 1000 --repeats 5 --json out.json
    python3 benchmarks/bench_train.py --jobs 2 --seq-len 45     # the stage's T

Run it on an otherwise idle machine: two jobs on two cores measure the main job's
setting only when nothing else competes for the cores.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write_config(path, preset_name, steps, seed, seq_len=None):
    from sicref.config import config_to_dict, preset, replace

    cfg = replace(preset(preset_name), optim={"anneal_lr": 0.0, "anneal_give_up": 0},
                  train={"steps": steps, "seed": seed})
    if seq_len is not None:
        cfg = replace(cfg, data={"seq_len": seq_len})
    with open(path, "w") as f:
        json.dump(config_to_dict(cfg), f)


MALLOC_NAMES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def one_repeat(preset_name, steps, jobs, repeat, workdir, plain_malloc=False, seq_len=None):
    from sicref.train import train_command

    procs = []
    for j in range(jobs):
        cfg_path = os.path.join(workdir, f"r{repeat}_j{j}.json")
        write_config(cfg_path, preset_name, steps, seed=j, seq_len=seq_len)
        cmd, env = train_command(cfg_path, os.path.join(workdir, f"r{repeat}_j{j}"), threads=1)
        if plain_malloc:
            for name in MALLOC_NAMES:
                env.pop(name, None)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        procs.append((time.perf_counter(), subprocess.Popen(
            cmd, env=env, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)))
    walls = []
    for start, p in procs:
        _, err = p.communicate()
        walls.append(time.perf_counter() - start)
        if p.returncode:
            raise SystemExit(f"sicref train failed:\n{err.decode()[-2000:]}")
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0  # KiB -> MiB
    wall = max(walls)
    return {"wall_s": wall, "steps_per_s": steps / wall, "peak_rss_mb": rss}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="laptop")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--plain-malloc", action="store_true",
                    help="drop the glibc MALLOC_* settings the main job's tries get "
                         "(sicref.train.MALLOC_ENV), and any in this environment")
    ap.add_argument("--seq-len", type=int, default=None,
                    help="trajectory length T (default: the preset's; the redrawn tries "
                         "and the stage after a rescale train at 45)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.repeats < 1 or min(args.jobs) < 1:
        ap.error("--steps, --repeats and --jobs must be at least 1")
    if args.seq_len is not None and args.seq_len < 1:
        ap.error(f"--seq-len must be at least 1, got {args.seq_len}")

    results = []
    malloc = "plain malloc" if args.plain_malloc else "MALLOC_* as the main job"
    t_note = f", T = {args.seq_len}" if args.seq_len is not None else ""
    print(f"# sicref train, preset {args.preset}{t_note}, {args.steps} steps, one BLAS thread per "
          f"process, {malloc}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs")
    print("| jobs | median wall s | median steps/s per process | peak RSS MiB | repeats |")
    print("|---|---|---|---|---|")
    for jobs in args.jobs:
        runs = []
        for r in range(args.repeats):
            with tempfile.TemporaryDirectory() as d:
                runs.append(one_repeat(args.preset, args.steps, jobs, r, d, args.plain_malloc,
                                       args.seq_len))
        row = {"jobs": jobs, "steps": args.steps, "preset": args.preset,
               "seq_len": args.seq_len, "repeats": runs,
               "median_wall_s": statistics.median(x["wall_s"] for x in runs),
               "median_steps_per_s": statistics.median(x["steps_per_s"] for x in runs),
               "peak_rss_mb": max(x["peak_rss_mb"] for x in runs)}
        results.append(row)
        print(f"| {jobs} | {row['median_wall_s']:.1f} | {row['median_steps_per_s']:.1f} | "
              f"{row['peak_rss_mb']:.0f} | {args.repeats} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
