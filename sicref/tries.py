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


def _launch(cfg, run_dir, threads, init_from=None):
    os.makedirs(run_dir, exist_ok=True)
    cfg_path = os.path.join(os.path.dirname(run_dir), os.path.basename(run_dir) + ".json")
    save_config(cfg, cfg_path)
    cmd, env = train_command(cfg_path, run_dir, threads, init_from=init_from)
    return start_process(cmd, env, run_dir + ".log")


def start_process(cmd, env, log_path):
    """Start a child process that trains, its output appended to log_path. Returns
    (process, log file)."""
    log = open(log_path, "a")
    return subprocess.Popen(cmd, stdout=log, stderr=log, env=env), log


def stop_process(proc, fh):
    """Stop a child process that trains, wait for it, close its log."""
    proc.terminate()
    proc.wait()
    fh.close()


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


def try_name(row):
    """How the logs and figures name a try: "try 3", or "try 3 redrawn"."""
    return f"try {row['try']}" + (" redrawn" if row.get("redrawn") else "")


def redraw_dir(out, index, seed):
    return try_dir(out, index, seed) + "_redrawn"


def run_tries(cfg, out, tries, jobs=2, log=print, poll=5.0, report_every=60.0,
              launch=None, redraw=None, lost=()):
    """Train up to `tries` initialisations of cfg into out/tries/, `jobs` at a time, and
    return (chosen index, rows). Continues an interrupted main job (every try resumes
    from its latest checkpoint; a try that has ended is not started again, nor one
    above a try already caught). launch(cfg, run_dir, threads[, init_from]) ->
    (process, log file) starts one try (default: a `sicref train` subprocess).

    redraw (True, or a function from a try's config to its redrawn try's): a try that
    gives up is followed by its redrawn try (sicref.grow: every unit's recurrent
    weights and start entry redrawn from the try's last checkpoint, then trained under
    redraw(config), default sicref.grow.redraw_config, with its own gate) in out/tries/
    try{i}_seed{s}_redrawn. The tries are then ordered try 0, try 0 redrawn, try 1, try 1
    redrawn, ...; rows and the chosen index follow that order, and each row says which
    try it is ("try") and whether it is the redrawn one ("redrawn").

    lost: (try, redrawn) pairs whose caught lattice the caller found lost afterwards
    (the main job's rescale, sicref.grow.rescale_held); they count as ended with status
    "lost", and the tries after them run on (a stopped one continues)."""
    from .grow import redraw_config, write_redraw_start

    launch = launch or _launch
    if tries < 1 or jobs < 1:
        raise TriesError(f"tries and jobs must be >= 1, got {tries} and {jobs}")
    firsts = [replace(cfg, train={"seed": try_seed(cfg.train.seed, i)})
              for i in range(tries)]
    if redraw is True:
        redraw = redraw_config
    order = [(i, r) for i in range(tries) for r in ((False, True) if redraw else (False,))]
    cfgs = [redraw(firsts[i]) if r else firsts[i] for i, r in order]
    dirs = [(redraw_dir if r else try_dir)(out, i, firsts[i].train.seed) for i, r in order]
    names = [try_name({"try": i, "redrawn": r}) for i, r in order]
    n = len(order)
    running, finished, caught, announced = {}, {}, set(), {}

    def runnable(a):  # a redrawn try follows its try's give-up
        return not order[a][1] or finished.get(a - 1) == "gave up"

    def start(a):
        if not order[a][1]:
            return launch(cfgs[a], dirs[a], TRY_THREADS)
        begin = dirs[a] + "_start.npz"
        if not os.path.exists(os.path.join(dirs[a], "checkpoints", "latest.npz")):
            write_redraw_start(dirs[a - 1], begin, cfgs[a])
        return launch(cfgs[a], dirs[a], TRY_THREADS, init_from=begin)

    lost = {a for a in range(n) if order[a] in set(lost)}

    def status_of(a):
        status, checks = try_status(dirs[a], cfgs[a])
        return ("lost" if status == "caught" and a in lost else status), checks

    for a in range(n):  # a continued job: what is on disk already
        if not os.path.isdir(dirs[a]):
            continue
        status = status_of(a)[0]
        if status == "caught":
            caught.add(a)
        if run_ended(dirs[a], cfgs[a]) or a in lost:
            finished[a] = status
            log(f"{names[a]} (seed {cfgs[a].train.seed}) had ended: {status}")
    last_report = time.monotonic()
    try:
        while True:
            for a in list(running):  # collect ended processes
                proc, fh = running[a]
                if proc.poll() is not None:
                    fh.close()
                    del running[a]
                    if proc.returncode != 0:
                        raise TriesError(f"{names[a]} ({dirs[a]}) failed with exit code "
                                         f"{proc.returncode}; its log is {dirs[a]}.log")
                    finished[a] = status_of(a)[0]
                    log(f"{names[a]} (seed {cfgs[a].train.seed}) ended: {finished[a]}")
            for a in list(running) + list(finished):  # news from the gate
                status, checks = status_of(a)
                for c in checks:
                    key = (a, c["step"])
                    if key in announced:
                        continue
                    announced[key] = True
                    if c.get("switch"):
                        log(f"{names[a]}: the gate opened at step {c['step']} "
                            f"({c['grid_fraction']:.0%} grid units)")
                    if c.get("confirmed"):
                        log(f"{names[a]}: lattice confirmed at step {c['step']} "
                            f"({c['grid_fraction']:.0%})")
                    if c.get("gave_up"):
                        log(f"{names[a]}: gave up at step {c['step']}")
                if status == "caught":
                    caught.add(a)
            best = min(caught) if caught else None
            for a in [a for a in running if best is not None and a > best]:
                stop_process(*running.pop(a))
                log(f"{names[a]} stopped: {names[best]} has caught a lattice")
            # the lowest runnable tries first: the outcome does not depend on timing
            for a in range(n if best is None else best + 1):
                if len(running) >= jobs:
                    break
                if a in running or a in finished or not runnable(a):
                    continue
                what = (f"every unit of {names[a - 1]} redrawn, T = "
                        f"{cfgs[a].data.seq_len}, lr {cfgs[a].optim.lr:g}"
                        if order[a][1] else f"seed {cfgs[a].train.seed}")
                log(f"{names[a]}: {what} -> {dirs[a]}")
                running[a] = start(a)
            if not running:
                break
            if time.monotonic() - last_report >= report_every:
                last_report = time.monotonic()
                for a in sorted(running):
                    log(f"  {names[a]}: {_last_progress_line(dirs[a]) or 'starting'}")
            time.sleep(poll)
    finally:
        for proc, fh in running.values():
            stop_process(proc, fh)
    chosen = min(caught) if caught else None
    rows = []
    for a, (i, redrawn) in enumerate(order):
        status, checks = status_of(a) if os.path.isdir(dirs[a]) else ("not run", [])
        if a in finished and status == "open":
            status = "ended"  # reached train.steps with the gate shut (or no gate)
        elif a not in finished and status != "caught" and chosen is not None and a > chosen:
            status = "stopped" if os.path.isdir(dirs[a]) else "not run"
        last = _progress(dirs[a]) if os.path.isdir(dirs[a]) else None
        switch = next((c["step"] for c in checks if c.get("switch")), None)
        row = {"try": i, "seed": cfgs[a].train.seed, "run_dir": dirs[a],
               "status": status, "steps": last["step"] if last else 0,
               "switch_step": switch,
               "best_reading": max((c["grid_fraction"] for c in checks), default=None)}
        if redraw:
            row["redrawn"] = redrawn
        rows.append(row)
    if chosen is None:  # no lattice: show the try that came closest
        ran = [a for a in range(n) if rows[a]["best_reading"] is not None]
        chosen = (max(ran, key=lambda a: (rows[a]["best_reading"], -a)) if ran else 0)
    atomic_write_text(os.path.join(out, LAYOUT_FILE), json.dumps(
        {"chosen": chosen, "caught": chosen in caught, "tries": rows}, indent=1))
    return chosen, rows
