"""The stage in lanes (`sicref run --grow-until-two --grow-lanes K`): K freeing seeds of
the same stage side by side, the first to hold two modules kept.

Not in the paper. How many steps the stage needs before its fine module holds varies
from one freeing seed to another (3000 to 10000 and more on the lattices of
docs/experiments.md, "The fine module at the size minimum"), and the stage trains on
one core while the other idles. Lane i is the stage of sicref.grow with freeing and
data seed `seed + LANE_SEED_STRIDE * i` (lane 0 is the plain stage, in out/grow), its
readings' walks always from `seed`, each lane a `sicref grow --until-two` process with
one BLAS thread.

The winner does not depend on timing or on how many lanes run at once: it is the lane
whose readings first hold two modules (sicref.grow.two_modules_held), by step, the
lower lane on a tie; where no lane's do, the lane whose readings have the most modules,
then the lower lane. A lane is stopped once it can no longer win: when lane w holds two
modules at step s, a lower lane must have been read up to s and a higher one up to the
reading before s. The outcome is then the same as every lane trained to its end.
"""

import json
import os
import sys
import time

from .checkpoint import atomic_write_text
from .evaluate import earlier_readings
from . import grow as grow_module
from .grow import two_modules_held
from .train import TrainingError, child_env
from .tries import TRY_THREADS, _last_progress_line, start_process, stop_process

LANE_SEED_STRIDE = 1000
LAYOUT_FILE = "grow_lanes.json"


def lane_seed(seed, lane):
    return seed + LANE_SEED_STRIDE * lane


def lane_dir(out, lane):
    """Lane 0 is the plain stage's directory, out/grow; lane i > 0 is out/grow_lane{i}."""
    return os.path.join(out, "grow" if lane == 0 else f"grow_lane{lane}")


def lane_readings(path):
    """A lane's readings so far: the rows of path/evaluation/over_training.json."""
    return earlier_readings(os.path.join(path, "evaluation"), log=lambda line: None)


def held_step(rows):
    """The step at which `--grow-until-two` stops on these readings (the first reading
    where two_modules_held holds on the readings up to it), or None."""
    for k in range(len(rows)):
        if two_modules_held(rows[:k + 1]):
            return rows[k]["step"]
    return None


def read_to_the_end(rows, steps):
    """Whether a lane's readings say that its stage has finished: two modules held, or
    the reading of its last step, `steps`, is in (so a continued job need not start it
    again)."""
    return held_step(rows) is not None or bool(rows) and rows[-1]["step"] >= steps


def leader(lanes):
    """(s, w): lane w holds two modules at step s, the earliest so far (the lower lane
    on a tie); None while no lane does. lanes as for lanes_winner."""
    held = [(s, i) for i, s in enumerate(held_step(rows) for rows, _ in lanes)
            if s is not None]
    return min(held) if held else None


def out_of_race(lanes, every=None):
    """The lanes that can no longer win, beside the leader (none while there is none)."""
    lead = leader(lanes)
    if lead is None:
        return set()
    return {j for j in range(len(lanes))
            if j != lead[1] and not still_in_race(lanes[j], j, *lead, every)}


def lanes_winner(lanes, every=None):
    """The winning lane, or None while it cannot be told yet. lanes: one (readings,
    ended) pair per lane, the readings in step order, ended: the lane's stage has
    finished (held two modules, or trained all its steps). every: steps between
    readings (sicref.grow.GROW_CHECKPOINT_EVERY)."""
    lead = leader(lanes)
    if lead is not None:
        others = set(range(len(lanes))) - {lead[1]}
        return lead[1] if out_of_race(lanes, every) == others else None
    if not all(ended for _, ended in lanes):
        return None
    most = [max((len(r["modules"]["sizes"]) for r in rows), default=0)
            for rows, _ in lanes]
    return max(range(len(lanes)), key=lambda i: (most[i], -i))


def still_in_race(lane, j, s, w, every=None):
    """Whether lane j could still beat lane w, which holds two modules at step s: j has
    not ended and has not been read up to s (j < w, whom a tie favours) or up to the
    reading before s (j > w)."""
    every = grow_module.GROW_CHECKPOINT_EVERY if every is None else every
    rows, ended = lane
    last = rows[-1]["step"] if rows else 0
    return not ended and last < (s if j < w else s - every)


def lane_command(source, summary_path, path, steps, seed, reading_seed):
    """(argv, env) of one lane: `sicref grow --until-two --no-evaluate` with one BLAS
    thread, continuing the lane where an earlier call left it."""
    cmd = [sys.executable, "-m", "sicref", "grow", str(source), "--summary",
           str(summary_path), "--out", path, "--steps", str(steps), "--seed", str(seed),
           "--reading-seed", str(reading_seed), "--until-two", "--no-evaluate",
           "--threads", str(TRY_THREADS)]
    return cmd, child_env(TRY_THREADS)


def _launch(source, summary_path, path, steps, seed, reading_seed):
    cmd, env = lane_command(source, summary_path, path, steps, seed, reading_seed)
    return start_process(cmd, env, path + ".log")


def race_stage(source, summary_path, out, steps, seed, lanes, jobs=2, log=print,
               poll=2.0, report_every=60.0, launch=None):
    """Train the stage's `lanes` lanes on source (a caught lattice; summary_path: its
    evaluation's summary.json) into lane_dir(out, i), at most `jobs` at a time, lowest
    lanes first, until lanes_winner tells the winner; stop the others. Each lane trains
    at most `steps` steps. launch(source, summary_path, dir, steps, seed,
    reading_seed) -> (process, log file) starts one lane (default: a `sicref grow`
    subprocess). Calling it again continues the lanes. Writes out/grow_lanes.json.
    Returns (run directory, layout, readings up to where the winner stopped, stopped
    before `steps`?), as sicref.run.train_stage does."""
    launch = launch or _launch
    if lanes < 1 or jobs < 1:
        raise TrainingError(f"lanes and jobs must be >= 1, got {lanes} and {jobs}")
    dirs = [lane_dir(out, i) for i in range(lanes)]
    seeds = [lane_seed(seed, i) for i in range(lanes)]
    running, ended, shown = {}, set(), {}
    last_report = time.monotonic()
    try:
        while True:
            for i in list(running):
                proc, fh = running[i]
                if proc.poll() is None:
                    continue
                fh.close()
                del running[i]
                if proc.returncode != 0:
                    raise TrainingError(f"grow lane {i} ({dirs[i]}) failed with exit code "
                                        f"{proc.returncode}; its log is {dirs[i]}.log")
                ended.add(i)
            state = [(rows, i in ended or read_to_the_end(rows, steps))
                     for i, rows in enumerate(lane_readings(d) for d in dirs)]
            for i, (rows, _) in enumerate(state):
                for r in rows[shown.get(i, 0):]:
                    log(f"grow lane {i} (seed {seeds[i]}): step {r['step']}: grid "
                        f"{r['grid_fraction']:.0%}, modules {r['modules']['periods']}")
                shown[i] = len(rows)
            winner = lanes_winner(state)
            if winner is not None and winner not in running:
                break
            beaten = out_of_race(state)
            for i in sorted(beaten & set(running)):
                stop_process(*running.pop(i))
                log(f"grow lane {i} stopped: it can no longer hold two modules first")
            for i in range(lanes):
                if len(running) >= jobs:
                    break
                if i in running or i in ended or i in beaten:
                    continue
                log(f"grow lane {i}: freeing and data seed {seeds[i]} -> {dirs[i]} (log "
                    f"{dirs[i]}.log)")
                running[i] = launch(source, summary_path, dirs[i], steps, seeds[i], seed)
            if time.monotonic() - last_report >= report_every:
                last_report = time.monotonic()
                for i in sorted(running):
                    log(f"  grow lane {i}: "
                        f"{_last_progress_line(dirs[i]) or 'starting'}")
            time.sleep(poll)
    finally:
        for proc, fh in running.values():
            stop_process(proc, fh)
    rows = state[winner][0]
    stop = held_step(rows)
    if stop is not None:
        rows = [r for r in rows if r["step"] <= stop]
    with open(os.path.join(dirs[winner], "freed.json")) as f:
        layout = json.load(f)
    atomic_write_text(os.path.join(out, LAYOUT_FILE), json.dumps({
        "winner": winner, "lanes": [
            {"lane": i, "seed": seeds[i], "dir": dirs[i], "held_two_at": held_step(r),
             "last_read": r[-1]["step"] if r else None, "ended": e}
            for i, (r, e) in enumerate(state)]}, indent=1))
    log(f"grow lanes: lane {winner} (seed {seeds[winner]}) "
        + (f"held two modules first, at step {stop}" if stop is not None else
           "kept: no lane held two modules; it has the most modules in a reading"))
    return os.path.join(dirs[winner], "run"), layout, rows, stop is not None and stop < steps
