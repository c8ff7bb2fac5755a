"""Search over configs: parallel training runs, each evaluated in a 2 m arena, one table.

A sweep directory holds one run directory per config (named by its overrides), each
with its own evaluation, and `table.md` / `table.jsonl` with one row per run. A run
whose evaluation summary exists is not redone; an interrupted one continues from its
latest checkpoint.
"""

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from .checkpoint import atomic_write_text, read_jsonl
from .cli import add_config_args, config_from_args, sigterm_exits
from .config import config_to_dict, replace, save_config
from .train import train_command


def parse_override(text, base):
    """'section.field=v1,v2' -> (section, field, [values]) with JSON-typed values."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ValueError(f"override {text!r} must look like section.field=value[,value]")
    key, values = text.split("=", 1)
    section, field = key.split(".", 1)
    if not hasattr(base, section) or not hasattr(getattr(base, section), field):
        raise ValueError(f"override {text!r}: unknown config field {section}.{field}")
    parsed = []
    for v in values.split(","):
        try:
            parsed.append(json.loads(v))
        except json.JSONDecodeError:
            parsed.append(v)
    return section, field, parsed


def one_at_a_time_configs(base, overrides):
    """The base config, then each override value changed alone; returns [(name, Config)]."""
    out = [("base", base)]
    for section, field, values in (parse_override(o, base) for o in overrides):
        for value in values:
            if getattr(getattr(base, section), field) != value:
                out.append((f"{field}={value}", replace(base, **{section: {field: value}})))
    return out


def grid_configs(base, overrides):
    """Every combination of the override values; returns [(name, Config)]."""
    axes = [parse_override(o, base) for o in overrides]
    out = []
    for combo in itertools.product(*[vals for _, _, vals in axes]):
        changes, parts = {}, []
        for (section, field, _), value in zip(axes, combo):
            changes.setdefault(section, {})[field] = value
            parts.append(f"{field}={value}")
        name = "_".join(parts) or "base"
        out.append((name, replace(base, **changes) if changes else base))
    return out


# The training and evaluation processes running for sweep(), so that a stopped sweep
# (Ctrl-C, SIGTERM) can stop them; once _stopping is set, no new one starts.
_children, _children_lock, _stopping = set(), threading.Lock(), threading.Event()


def _call(cmd, log, env):
    """subprocess.call, registered in _children while it runs."""
    with _children_lock:
        if _stopping.is_set():
            return -signal.SIGTERM
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
        _children.add(proc)
    try:
        return proc.wait()
    finally:
        with _children_lock:
            _children.discard(proc)


def _stop_children():
    with _children_lock:
        _stopping.set()
        for proc in _children:
            proc.terminate()


def _run_one(sweep_dir, name, cfg, arena, threads, max_seconds=None):
    run_dir = os.path.join(sweep_dir, name)
    eval_dir = os.path.join(run_dir, "evaluation")
    summary_path = os.path.join(eval_dir, "summary.json")
    if os.path.exists(summary_path):
        return _row(name, cfg, run_dir, summary_path, None)
    os.makedirs(run_dir, exist_ok=True)
    cfg_path = os.path.join(sweep_dir, f"{name}.config.json")
    save_config(cfg, cfg_path)
    cmd, env = train_command(cfg_path, run_dir, threads, max_seconds)
    t0 = time.time()
    with open(os.path.join(sweep_dir, f"{name}.log"), "a") as log:
        rc = _call(cmd, log, env)
        if rc != 0:
            return {"name": name, "status": f"train failed (rc {rc})"}
        rc = _call([sys.executable, "-m", "sicref", "evaluate", run_dir, "--arena",
                    str(arena), "--out", eval_dir, "--overwrite"], log, env)
        if rc != 0:
            return {"name": name, "status": f"evaluate failed (rc {rc})"}
    return _row(name, cfg, run_dir, summary_path, time.time() - t0)


def _row(name, cfg, run_dir, summary_path, wall):
    with open(summary_path) as f:
        summary = json.load(f)
    arena = next(iter(summary["arenas"].values()))
    last = (read_jsonl(os.path.join(run_dir, "metrics.jsonl"), partial_ok=True)
            or [{}])[-1]
    return {"name": name, "status": "done", "wall_s": wall if wall is not None else
            last.get("seconds"), "step": summary["step"],
            "total": last.get("total"), "separation": last.get("separation"),
            "invariance": last.get("invariance"), "capacity": last.get("capacity"),
            "grid_fraction": arena["grid_fraction"],
            "hexagonal_fraction": arena["hexagonal_fraction"],
            "median_score60": arena["median_score60_active"],
            "n_active": arena["n_active"],
            "n_modules": len(arena["modules"]["periods"]),
            "module_periods": arena["modules"]["periods"],
            "path_invariance": summary["path_invariance"]["relative"],
            "config": config_to_dict(cfg)}


def write_table(sweep_dir, rows):
    atomic_write_text(os.path.join(sweep_dir, "table.jsonl"),
                      "".join(json.dumps(r) + "\n" for r in rows))
    head = ("| run | status | steps | wall s | total | grid frac | hex frac | median g60 "
            "| active | modules | periods (m) | path inv |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        if r["status"] != "done":
            lines.append(f"| {r['name']} | {r['status']} |" + " |" * 10)
            continue
        periods = ", ".join(f"{p:.2f}" for p in r["module_periods"])
        lines.append(
            f"| {r['name']} | done | {r['step']} | {r['wall_s']:.0f} | {r['total']:.4f} | "
            f"{r['grid_fraction']:.2f} | {r['hexagonal_fraction']:.2f} | "
            f"{r['median_score60']:.2f} | {r['n_active']} | {r['n_modules']} | {periods} | "
            f"{r['path_invariance']:.3f} |")
    atomic_write_text(os.path.join(sweep_dir, "table.md"), "\n".join(lines) + "\n")


def sweep(base, overrides, sweep_dir, jobs=2, threads=1, arena=2.0, max_seconds=None,
          mode="grid", log=print):
    """Run every config of the grid or one-at-a-time design (jobs at a time);
    returns the table rows."""
    configs = (one_at_a_time_configs if mode == "oat" else grid_configs)(base, overrides)
    os.makedirs(sweep_dir, exist_ok=True)
    log(f"sweep: {len(configs)} runs, {jobs} at a time -> {sweep_dir}")
    _stopping.clear()
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        futures = [pool.submit(_run_one, sweep_dir, n, c, arena, threads, max_seconds)
                   for n, c in configs]
        rows = []
        for f in futures:
            rows.append(f.result())
            r = rows[-1]
            log(f"  {r['name']}: {r['status']}"
                + (f", grid {r['grid_fraction']:.0%}, modules {r['n_modules']}"
                   if r["status"] == "done" else ""))
            write_table(sweep_dir, rows)
    except BaseException:  # stopped (Ctrl-C, SIGTERM) or failed: stop the runs too
        pool.shutdown(wait=False, cancel_futures=True)
        _stop_children()
        raise
    finally:
        pool.shutdown(wait=True)
    return rows


def add_sweep_commands(sub):
    p = sub.add_parser("sweep", help="train and evaluate a grid of configs in parallel")
    add_config_args(p)
    p.add_argument("--set", dest="overrides", nargs="*", default=[],
                   metavar="SECTION.FIELD=V1,V2", help="values to sweep")
    p.add_argument("--mode", choices=["grid", "oat"], default="grid",
                   help="every combination, or the base plus one change at a time")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="BLAS threads per run")
    p.add_argument("--arena", type=float, default=2.0)
    p.add_argument("--max-seconds", type=float, help="training wall-time cap per run")
    p.add_argument("--out", required=True, metavar="DIR")
    p.set_defaults(func=_cmd_sweep)


def _cmd_sweep(args):
    base = config_from_args(args)
    if args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    with sigterm_exits():  # a stopped sweep stops its runs; a later call continues them
        rows = sweep(base, args.overrides, args.out, args.jobs, args.threads, args.arena,
                     args.max_seconds, args.mode)
    return 0 if all(r["status"] == "done" for r in rows) else 1
