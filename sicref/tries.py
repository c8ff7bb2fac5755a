"""Several initialisations for one main job: train them (in parallel) until one catches
a lattice.

Whether a run passes through a hexagonal lattice at the 2.5k-4.5k-step transition is
chance-like at laptop size (docs/experiments.md sections 3-4): a given initialisation
does it about one time in five (lambda_cap 0.5) to seven (0.25). With the annealing
gate (`optim.anneal_*`) a run knows when it has caught one, and with `anneal_give_up` /
`anneal_confirm` it stops early when it has not. The main job therefore trains try 0,
1, 2, ... (try i uses train.seed = seed + TRY_SEED_STRIDE * i, everything else
unchanged), at most `jobs` at a time, and keeps the first that catches a lattice.

The outcome does not depend on timing: the chosen try is the lowest-numbered one that
catches a lattice. Tries with a higher number than a try that has caught one are
stopped (they can no longer be chosen); lower-numbered ones always run to their end.
Every try is an ordinary run directory, reproducible alone with
`sicref train --config DIR/config.json --threads 1`.

Every try trains with one BLAS thread (TRY_THREADS), whatever `jobs` is and whatever
the environment says: a BLAS product split over another number of threads sums in
another order, and over thousands of steps a run with two threads takes another path
than one with one (docs/performance.md, "BLAS threads and results").
"""

import json
import os
import shutil
import subprocess
import time

from .checkpoint import atomic_write_text, read_jsonl
from .config import replace, save_config
from .train import TrainingError, run_ended, train_command

TRY_SEED_STRIDE = 1000
TRY_THREADS = 1  # BLAS threads per try, fixed so that --jobs does not change results
LAYOUT_FILE = "tries.json"


class TriesError(TrainingError):
    """A try failed to run, or the output directory cannot be used."""


def try_seed(seed, index):
    return seed + TRY_SEED_STRIDE * index


def try_dir(out, index, seed):
    return os.path.join(out, "tries", f"try{index}_seed{seed}")


def try_status(run_dir, cfg):
    """What a try's gate readings say: "caught" (a lattice that the gate confirmed, or
    the switch alone when anneal_confirm is 0), "gave up", or "open" (neither yet).
    Also returns the readings."""
    checks = read_jsonl(os.path.join(run_dir, "gridness.jsonl"), partial_ok=True)
    if any(c.get("gave_up") for c in checks):
        return "gave up", checks
    need = "confirmed" if cfg.optim.anneal_confirm else "switch"
    if any(c.get(need) for c in checks):
        return "caught", checks
    return "open", checks


def prepare_out(out, overwrite):
    """out must be new, empty, or an earlier main job's (continued unless overwrite)."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise TriesError(f"--out {out} exists and is not a directory")
    if os.path.isdir(out) and os.listdir(out):
        ours = os.path.exists(os.path.join(out, LAYOUT_FILE)) or os.path.isdir(
            os.path.join(out, "tries"))
        if not ours:
            raise TriesError(f"refusing to use {out}: it is not empty and not a `sicref "
                             f"run` directory (no {LAYOUT_FILE} or tries/)")
        if overwrite:
            shutil.rmtree(out)
    os.makedirs(os.path.join(out, "tries"), exist_ok=True)


def _launch(cfg, run_dir, threads):
    os.makedirs(run_dir, exist_ok=True)
    cfg_path = os.path.join(os.path.dirname(run_dir), os.path.basename(run_dir) + ".json")
    save_config(cfg, cfg_path)
    cmd, env = train_command(cfg_path, run_dir, threads)
    log = open(os.path.join(os.path.dirname(run_dir),
                            os.path.basename(run_dir) + ".log"), "a")
    return subprocess.Popen(cmd, stdout=log, stderr=log, env=env), log


def _progress(run_dir):
    rows = read_jsonl(os.path.join(run_dir, "metrics.jsonl"), partial_ok=True)
    return rows[-1] if rows else None


def _last_progress_line(run_dir):
    """The try's latest progress line (step, losses, lr, steps/s, ETA) from its log."""
    try:
        with open(run_dir + ".log", "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    found = [ln for ln in lines if ln.startswith("step ") and "steps/s" in ln]
    return found[-1] if found else None


def run_tries(cfg, out, tries, jobs=2, log=print, poll=5.0, report_every=60.0,
              launch=None):
    """Train up to `tries` initialisations of cfg into out/tries/, `jobs` at a time, and
    return (chosen index, rows). Continues an interrupted main job (every try resumes
    from its latest checkpoint; a try that has ended is not started again, nor one
    above a try already caught). launch(cfg, run_dir, threads) -> (process, log file)
    starts one try (default: a `sicref train` subprocess)."""
    launch = launch or _launch
    if tries < 1 or jobs < 1:
        raise TriesError(f"tries and jobs must be >= 1, got {tries} and {jobs}")
    cfgs = [replace(cfg, train={"seed": try_seed(cfg.train.seed, i)}) for i in range(tries)]
    dirs = [try_dir(out, i, c.train.seed) for i, c in enumerate(cfgs)]
    running, finished, caught, announced = {}, {}, set(), {}
    for i in range(tries):  # a continued job: what is on disk already
        if not os.path.isdir(dirs[i]):
            continue
        status = try_status(dirs[i], cfg)[0]
        if status == "caught":
            caught.add(i)
        if run_ended(dirs[i], cfgs[i]):
            finished[i] = status
            log(f"try {i} (seed {cfgs[i].train.seed}) had ended: {status}")
    next_index, last_report = 0, time.monotonic()
    try:
        while True:
            for i in list(running):  # collect ended processes
                proc, fh = running[i]
                if proc.poll() is not None:
                    fh.close()
                    del running[i]
                    if proc.returncode != 0:
                        raise TriesError(f"try {i} ({dirs[i]}) failed with exit code "
                                         f"{proc.returncode}; its log is {dirs[i]}.log")
                    finished[i] = try_status(dirs[i], cfg)[0]
                    log(f"try {i} (seed {cfgs[i].train.seed}) ended: {finished[i]}")
            for i in list(running) + list(finished):  # news from the gate
                status, checks = try_status(dirs[i], cfg)
                for c in checks:
                    key = (i, c["step"])
                    if key in announced:
                        continue
                    announced[key] = True
                    if c.get("switch"):
                        log(f"try {i}: the gate opened at step {c['step']} "
                            f"({c['grid_fraction']:.0%} grid units)")
                    if c.get("confirmed"):
                        log(f"try {i}: lattice confirmed at step {c['step']} "
                            f"({c['grid_fraction']:.0%})")
                    if c.get("gave_up"):
                        log(f"try {i}: gave up at step {c['step']}")
                if status == "caught":
                    caught.add(i)
            best = min(caught) if caught else None
            for i in [i for i in running if best is not None and i > best]:
                proc, fh = running.pop(i)
                proc.terminate()
                proc.wait()
                fh.close()
                log(f"try {i} stopped: try {best} has caught a lattice")
            while (len(running) < jobs and next_index < tries
                   and (best is None or next_index <= best)):
                if next_index in finished:
                    next_index += 1
                    continue
                log(f"try {next_index}: seed {cfgs[next_index].train.seed} -> "
                    f"{dirs[next_index]}")
                running[next_index] = launch(cfgs[next_index], dirs[next_index], TRY_THREADS)
                next_index += 1
            if not running:
                break
            if time.monotonic() - last_report >= report_every:
                last_report = time.monotonic()
                for i in sorted(running):
                    log(f"  try {i}: {_last_progress_line(dirs[i]) or 'starting'}")
            time.sleep(poll)
    finally:
        for proc, fh in running.values():
            proc.terminate()
            proc.wait()
            fh.close()
    chosen = min(caught) if caught else None
    rows = []
    for i in range(tries):
        status, checks = try_status(dirs[i], cfg) if os.path.isdir(dirs[i]) else (
            "not run", [])
        if i in finished and status == "open":
            status = "ended"  # reached train.steps with the gate shut (or no gate)
        elif i not in finished and status != "caught" and chosen is not None and i > chosen:
            status = "stopped" if os.path.isdir(dirs[i]) else "not run"
        last = _progress(dirs[i]) if os.path.isdir(dirs[i]) else None
        switch = next((c["step"] for c in checks if c.get("switch")), None)
        rows.append({"try": i, "seed": cfgs[i].train.seed, "run_dir": dirs[i],
                     "status": status, "steps": last["step"] if last else 0,
                     "switch_step": switch,
                     "best_reading": max((c["grid_fraction"] for c in checks),
                                         default=None)})
    if chosen is None:  # no lattice: show the try that came closest
        ran = [r for r in rows if r["best_reading"] is not None]
        chosen = (max(ran, key=lambda r: (r["best_reading"], -r["try"]))["try"]
                  if ran else 0)
    atomic_write_text(os.path.join(out, LAYOUT_FILE), json.dumps(
        {"chosen": chosen, "caught": chosen in caught, "tries": rows}, indent=1))
    return chosen, rows
