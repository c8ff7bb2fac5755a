"""The main job: train the default preset, then evaluate it in 2, 3 and 4 m arenas."""

import argparse
import os
import sys
import time

from .checkpoint import read_jsonl
from .config import DEFAULT_PRESET, load_config, preset, replace
from . import grow as grow_module
from .evaluate import (checkpoint_reading, earlier_readings, evaluate_run,
                       headline, reading_line, save_over_training, write_over_training)
from .grow import (GROW_KEEP_MIN, GROW_LR, GROW_MODULES, GROW_READING_WALK,
                   GROW_SEQ_LEN, GROW_WALK, grow,
                   grow_until_two, pick_checkpoint, redraw_config, rescale,
                   rescale_config, rescale_held, rescale_readings, stage_seq_len)
from .lanes import LANE_SEED_STRIDE, race_stage
from .plots import tries_plot
from .tries import TRY_SEED_STRIDE, TRY_THREADS, prepare_out, run_tries, try_name

# Ten tries: a pair of failed tries takes about 3 minutes on 2 cores (5 on a slower
# machine), so ten take about 17 with the evaluation, 19 when the last pair catches a
# lattice (docs/results.md); at about one catch in six (9 of 57 tries over main seeds
# 0-8 on the slower machine), ten tries catch one about 8 times in 10.
DEFAULT_TRIES = 10
DEFAULT_JOBS = min(2, os.cpu_count() or 1)  # tries side by side, one core each
# The main job's default seed. Whether an initialisation catches a lattice is chance-
# like (about one in six with the laptop preset); seed 0's first or second try does
# (it depends on the machine), so the default command shows one in about 7 minutes.
# docs/results.md reports the other seeds alike.
DEFAULT_SEED = 0

# `sicref run` computes with the BLAS threads of its tries (sicref.tries.TRY_THREADS,
# one) in its own process too (the stage's training, the evaluations): the thread count
# changes the order of BLAS sums, so a job whose threads followed the environment would
# give another result under OPENBLAS_NUM_THREADS=2 than under 1 (docs/performance.md,
# "BLAS threads and results"). One thread costs the stage about 5 % alone on 2 cores.

MAIN_ARENAS = (2.0, 3.0, 4.0)
MAIN_BIN_SIZE = 2.0 / 32  # 32 bins in the 2 m arena, the same bin size in 3 and 4 m


# What the main job does after its tries, by default (docs/results.md, "The default
# main job"): a try that gives up is followed by its redrawn try (redraw), and the
# lattice caught is grown by the freeing stage for at most DEFAULT_GROW_STEPS steps,
# stopped once two modules hold, with DEFAULT_GROW_LANES freeing seeds raced. Over fresh
# seeds 23-25 this gave two modules in 2, 3 and 4 m on all three, where the stage with
# one freeing seed lost seed 23's lattice (docs/experiments.md, "Two freeing seeds side
# by side"). The lanes' count is fixed, not the machine's core count, so that the
# result does not depend on the machine's size (one core runs them one after another).
DEFAULT_GROW_STEPS = 10000
DEFAULT_GROW_LANES = 2
DEFAULT_REDRAW = True


def stage_settings(grow_steps, grow_until=None, grow_lanes=None):
    """The stage's (grow_until, grow_lanes) for main_job's arguments: None stands for the
    default (until two modules hold when there is a stage, DEFAULT_GROW_LANES lanes when
    it stops so). Raises ValueError, naming the flag, for settings that cannot go
    together."""
    if grow_steps < 0:
        raise ValueError(f"--grow-steps must be >= 0, got {grow_steps}")
    if grow_until is None:
        grow_until = grow_steps > 0
    if grow_lanes is None:
        grow_lanes = DEFAULT_GROW_LANES if grow_until else 1
    if grow_until and not grow_steps:
        raise ValueError("--grow-until-two needs --grow-steps N > 0 (the stage's most "
                         "steps)")
    if grow_lanes < 1:
        raise ValueError(f"--grow-lanes must be >= 1, got {grow_lanes}")
    if grow_lanes > 1 and not grow_until:
        raise ValueError("--grow-lanes K > 1 needs --grow-until-two (the lanes race to "
                         "hold two modules first)")
    return grow_until, grow_lanes


def main_job(preset_name=DEFAULT_PRESET, out="runs/default", seed=DEFAULT_SEED, steps=None,
             overwrite=False, log=None, tries=DEFAULT_TRIES, jobs=DEFAULT_JOBS,
             grow_steps=DEFAULT_GROW_STEPS, grow_until=None, redraw=DEFAULT_REDRAW,
             grow_lanes=None):
    """Train the preset (several initialisations when it has the annealing gate, see
    sicref.tries), evaluate the chosen one, write figures. grow_steps > 0 adds the
    second stage of sicref.grow when a lattice was caught: every unit but the best half
    of its 2 m modules (sicref.grow.keep_count) freed, grow_steps more steps at 1.5
    times the try's T, at least 30 (sicref.grow.stage_seq_len), evaluated in
    out/grow/evaluation; grow_until: stop the stage sooner, once
    GROW_CONFIRM 1000-step readings in a row have two modules (sicref.grow.grow_until_two);
    None: on when grow_steps > 0. grow_lanes > 1 (with grow_until): that many freeing
    seeds of the stage side by side, `jobs` at a time, the first to hold two modules kept
    (sicref.lanes); None: DEFAULT_GROW_LANES with grow_until, else 1.
    redraw: a try that gives up is followed by its redrawn try (sicref.tries.run_tries,
    sicref.grow.redraw_config); a redrawn try's lattice is rescaled (sicref.grow.rescale,
    into its run directory + "_rescaled") before it is evaluated and grown, and where
    the rescale loses it (sicref.grow.rescale_held) the tries go on as if it had not
    caught one.

    Returns the summary of the job's result: the stage's evaluation, or the try's when
    the stage ended with fewer 2 m modules than the try had. Running it again on the
    same out continues an interrupted job (finished tries are not retrained, finished
    evaluations and checkpoint readings of the same checkpoints not redone);
    --overwrite starts over.
    The tries train with one BLAS thread each; the stage and the evaluations run in
    this process, with its BLAS threads (`sicref run` makes them TRY_THREADS).
    """
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    t0 = time.monotonic()
    grow_until, grow_lanes = stage_settings(grow_steps, grow_until, grow_lanes)
    cfg = preset(preset_name)
    changes = {k: v for k, v in (("seed", seed), ("steps", steps)) if v is not None}
    if changes:
        cfg = replace(cfg, train=changes)
    gated = cfg.optim.anneal_lr > 0
    if not gated:
        tries = 1  # without the gate nothing tells a lattice apart
    prepare_out(out, overwrite)
    log(f"sicref run: preset {preset_name!r}, N={cfg.model.n_units}, "
        f"B={cfg.data.batch_size}, T={cfg.data.seq_len}, at most {cfg.train.steps} steps "
        f"per try, up to {tries} tr{'y' if tries == 1 else 'ies'} ({jobs} at a time"
        + (", each that gives up followed by its redrawn try" if redraw and gated
           else "") + f") -> {out}; each try's progress is in {out}/tries/*.log")
    if redraw and not gated:
        log("--redraw ignored: the preset has no annealing gate, so no try gives up")
    redrawn = redraw_config if redraw and gated else None
    lost, rescaled = set(), []
    while True:
        chosen, rows = run_tries(cfg, out, tries, jobs=jobs, log=log, redraw=redrawn,
                                 lost=lost)
        row = rows[chosen]
        run_dir = gate_dir = row["run_dir"]
        try_cfg = replace(cfg, train={"seed": row["seed"]})
        chosen_cfg = redrawn(try_cfg) if row.get("redrawn") else cfg
        if not (row.get("redrawn") and row["status"] == "caught"):
            break
        run_dir, before, after, what = rescale_redrawn(
            gate_dir, try_cfg, gate_dir + "_rescaled", try_name(row), log)
        if rescale_held(before, after):
            log(f"rescaled: {what}")
            rescaled.append(f"rescaled: {what}; evaluated with {GROW_WALK.n_walks} walks "
                            f"of {GROW_WALK.n_steps} steps:")
            row = dict(row, run_dir=run_dir)
            break
        log(f"rescaled: {what}: the lattice is lost (more than "
            f"{grow_module.RESCALE_TOLERANCE:.0%} below), on to the next try")
        rescaled.append(f"rescaled: {what}: lost")
        lost.add((row["try"], True))
    is_rescaled = run_dir != gate_dir
    walks = RESCALED_EVALUATION if is_rescaled else {}
    readings = (dict(walk=GROW_READING_WALK, modules=GROW_MODULES) if is_rescaled
                else {})
    eval_dir = os.path.join(out, "evaluation")
    log(f"evaluating {try_name(rows[chosen])}" + (", rescaled" if is_rescaled else "")
        + f" ({run_dir})")
    # the tries are over: the evaluation and the readings use every core the tries did
    # (`jobs` threads for the walks' rollouts; the results do not depend on it)
    summary = evaluate_run(run_dir, eval_dir, MAIN_ARENAS, seed=cfg.train.seed,
                           overwrite=True, log=log, bin_size=MAIN_BIN_SIZE, reuse=True,
                           workers=jobs, **walks)
    # SPEC §10: gridness is not monotonic in training; show it for every checkpoint.
    log("gridness of every checkpoint (2 m arena):")
    write_over_training(run_dir, eval_dir, 2.0, seed=cfg.train.seed, log=log, reuse=True,
                        workers=jobs, **readings)
    if len(rows) > 1:
        tries_plot(rows, cfg.optim.anneal_grid_fraction, eval_dir, "tries.png")
    log(f"figures and summary.json in {eval_dir}")
    lines = (tries_lines(rows, chosen) + gate_lines(gate_dir, chosen_cfg) + rescaled
             + headline(summary))
    if grow_steps:
        grown = grow_stage(row, summary, out, grow_steps, cfg.train.seed, log,
                           until_two=grow_until, lanes=grow_lanes, jobs=jobs)
        if grown is not None:
            grown_dir, grown_summary, grow_lines = grown
            lines += grow_lines
            before, after = modules_2m(summary), modules_2m(grown_summary)
            if after < before:
                # the stage can lose the lattice (docs/experiments.md, "A second module
                # beside a redrawn lattice"); the job then keeps what the try had
                lines.append(f"grow: the stage ended with fewer 2 m modules ({after}) than "
                             f"the try ({before}); the job's result stays the try's "
                             f"evaluation, {eval_dir}")
            else:
                eval_dir, summary = grown_dir, grown_summary
    for line in lines:
        log(line)
    log(f"main job: {_minutes(time.monotonic() - t0)} (this call); figures and "
        f"summary.json in {eval_dir}")
    return summary


# A rescaled lattice is evaluated as the stage's networks are (GROW_WALK, GROW_MODULES):
# over the main evaluation's 400-step walks it drifts, and one that read 97 % grid units
# over 100-step walks read 8 % (docs/experiments.md, "The sequence in the main job");
# the stage keeps the units this evaluation ranks best.
RESCALED_EVALUATION = {"walk": GROW_WALK, "modules": GROW_MODULES}


def rescale_redrawn(gate_dir, try_cfg, out, name, log):
    """Rescale the lattice of the redrawn try in gate_dir into out (sicref.grow.rescale):
    a redrawn try's lattice is coarse at its T, and RESCALE_STEPS at the T a caught
    try's lattice grows at bring it to that lattice's period. Returns (out, the
    confirming gate reading, the rescaled one (sicref.grow.rescale_readings), a line
    saying what was done and read)."""
    run_dir = rescale(gate_dir, try_cfg, out, log=log)
    before, after = rescale_readings(gate_dir, run_dir)
    r = rescale_config(try_cfg)
    what = (f"{name}'s lattice trained {r.train.steps} more steps at T = "
            f"{r.data.seq_len}, lr {r.optim.lr:g} ({run_dir}); gate reading "
            f"{before:.0%} -> {after:.0%}")
    return run_dir, before, after, what


def modules_2m(summary):
    """How many modules an evaluation counts in its 2 m arena."""
    return len(summary["arenas"]["2m"]["modules"]["periods"])


def _minutes(seconds):
    return f"{int(seconds // 60)} min {int(seconds % 60)} s"


def train_stage(source, summary, out, steps, seed, log, until_two=False,
                reading_seed=None):
    """The stage's training and its 2 m readings (GROW_MODULES, half the evaluation's
    walks), saved as out/evaluation/over_training.json after each. source: the lattice's
    checkpoint or run directory; summary: its evaluation (a dict or a summary.json);
    seed: the freeing and data seed; reading_seed: the readings' walks (default seed).
    until_two: read each checkpoint as it is written and stop once GROW_CONFIRM readings
    in a row have two modules (sicref.grow.grow_until_two); else train `steps` steps
    and read every checkpoint. Returns (run directory, layout, readings, stopped
    early?)."""
    reading_seed = seed if reading_seed is None else reading_seed
    eval_dir = os.path.join(out, "evaluation")
    reading_walk = GROW_READING_WALK
    about = f"2 m arena, {reading_walk.n_walks} walks of {reading_walk.n_steps} steps"
    if until_two:
        readings, earlier = [], earlier_readings(eval_dir, log)

        def read(path):
            readings.append(checkpoint_reading(path, 2.0, seed=reading_seed,
                                               walk=reading_walk, modules=GROW_MODULES,
                                               earlier=earlier))
            log(f"grow reading ({about}): {reading_line(readings[-1], earlier)}")
            os.makedirs(eval_dir, exist_ok=True)
            save_over_training(readings, eval_dir, 2.0)
            return readings[-1]

        return grow_until_two(source, summary, out, steps, seed, read, log=log)
    run_dir, layout = grow(source, summary, out, steps, seed, log=log)
    os.makedirs(eval_dir, exist_ok=True)
    log(f"gridness of every checkpoint of the grown network ({about}):")
    rows = write_over_training(run_dir, eval_dir, 2.0, seed=reading_seed, log=log,
                               modules=GROW_MODULES, walk=reading_walk, reuse=True)
    return run_dir, layout, rows, False


def evaluate_stage(run_dir, layout, rows, early, steps, seed, log, workers=1):
    """Evaluate the stage checkpoint that sicref.grow.pick_checkpoint picks from the
    readings (GROW_WALK, GROW_MODULES, the main arenas, walks from `seed`) into the
    evaluation directory beside run_dir, its walks rolled out in `workers` threads.
    Returns (evaluation dir, summary, headline lines)."""
    eval_dir = os.path.join(os.path.dirname(run_dir), "evaluation")
    stop = (f"stopped at step {rows[-1]['step']} of at most {steps}, "
            f"{grow_module.GROW_CONFIRM} readings in a row with two modules; "
            if early else "")
    step, last = pick_checkpoint(rows), rows[-1]
    why = ("most modules" if max(len(r["modules"]["sizes"]) for r in rows) >= 2
           else "the last; no reading has two modules")
    walk = f"{GROW_WALK.n_walks} walks of {GROW_WALK.n_steps} steps"
    log(f"evaluating step {step} ({why}; {walk}, SAC and "
        f"spectral periods within {GROW_MODULES.max_period_mismatch:.0%})")
    grown = evaluate_run(os.path.join(run_dir, "checkpoints", f"step_{step}.npz"),
                         eval_dir, MAIN_ARENAS, seed=seed, overwrite=True, log=log,
                         bin_size=MAIN_BIN_SIZE, walk=GROW_WALK, modules=GROW_MODULES,
                         reuse=True, workers=workers)
    periods = ", ".join(f"{p:.2f}" for p in last["modules"]["periods"]) or "none"
    seq_len = load_config(os.path.join(run_dir, "config.json")).data.seq_len
    lines = [f"grow: {len(layout['freed'])} units freed, trained to step {last['step']} "
             f"at T = {seq_len}; {stop}the last checkpoint reads "
             f"{last['grid_fraction']:.0%} grid units, module periods m: {periods}; step {step} ({why}) "
             f"evaluated with {walk}:"] + headline(grown)
    return eval_dir, grown, lines


def grow_stage(row, summary, out, steps, seed, log, until_two=False, lanes=1, jobs=1):
    """sicref.grow on the chosen try in out/grow, in this process: train_stage (freeing,
    data and readings from `seed`), then evaluate_stage; lanes > 1: that many freeing
    seeds raced in subprocesses, `jobs` at a time (sicref.lanes.race_stage, reading
    `summary` from out/evaluation/summary.json), the winner evaluated. Returns
    (evaluation dir, summary, headline lines), or None when no try caught a lattice
    (nothing to grow beside)."""
    if row["status"] != "caught":
        log("grow: skipped, no try caught a lattice")
        return None
    if lanes > 1:
        trained = race_stage(row["run_dir"], os.path.join(out, "evaluation", "summary.json"),
                             out, steps, seed, lanes, jobs, log)
    else:
        trained = train_stage(row["run_dir"], summary, os.path.join(out, "grow"), steps,
                              seed, log, until_two=until_two)
    return evaluate_stage(*trained, steps, seed, log, workers=jobs)


def tries_lines(rows, chosen):
    """One line per try, then which one was evaluated."""
    if len(rows) == 1:
        return []
    lines = []
    for r in rows:
        best = "-" if r["best_reading"] is None else f"{r['best_reading']:.0%}"
        lines.append(f"{try_name(r)} (seed {r['seed']}): {r['status']}, {r['steps']} "
                     f"steps, best gate reading {best}")
    caught = rows[chosen]["status"] == "caught"
    lines.append(f"evaluated: {try_name(rows[chosen])} ("
                 + ("the first to catch a lattice)" if caught else
                    "no try caught a lattice; this one came closest)"))
    return lines


def gate_lines(run_dir, cfg):
    """What the annealing gate did in a run (nothing when annealing is off)."""
    if cfg.optim.anneal_lr <= 0:
        return []
    checks = read_jsonl(os.path.join(run_dir, "gridness.jsonl"))
    opened = [c for c in checks if c.get("switch")]
    if opened:
        c = opened[0]
        return [f"annealing: the gate opened at step {c['step']} (grid fraction "
                f"{c['grid_fraction']:.0%} >= {cfg.optim.anneal_grid_fraction:.0%}); "
                f"lr {cfg.optim.anneal_lr:g} with a fresh AdamW from then on"
                + (f", halving every {cfg.optim.anneal_half_life} steps"
                   if cfg.optim.anneal_half_life else "")]
    if not checks:
        return ["annealing: no gate reading yet"]
    best = max(checks, key=lambda c: c["grid_fraction"])
    return [f"annealing: the gate never opened in {len(checks)} readings (best "
            f"{best['grid_fraction']:.0%} at step {best['step']}, needs "
            f"{cfg.optim.anneal_grid_fraction:.0%}); no lattice was caught. Whether an "
            f"initialisation passes through one is chance-like at this size: more tries "
            f"(--tries) or another --seed give more chances (docs/results.md)"]


def add_run_commands(sub):
    default = preset(DEFAULT_PRESET)
    p = sub.add_parser("run", help="main job: train the default preset, evaluate, figures",
                       description="The main job: train up to --tries initialisations of "
                       "the preset until one catches a grid lattice (each try that gives "
                       "up followed by its redrawn try), grow a second module beside it "
                       "(the freeing stage, two freeing seeds raced, stopped once two "
                       "modules hold), evaluate it in 2, 3 and 4 m arenas and write "
                       "figures and summary.json under DIR/evaluation (DIR/grow*/"
                       "evaluation for the stage). --no-redraw --grow-steps 0 gives the "
                       "tries alone. Calling it again continues an interrupted job. "
                       "Every process of the job computes with one BLAS thread, so its "
                       "results do not depend on the environment's thread settings.")
    p.add_argument("--preset", default=DEFAULT_PRESET,
                   help=f"config preset (default {DEFAULT_PRESET})")
    p.add_argument("--out", default="runs/default", metavar="DIR",
                   help="run directory (default runs/default)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED,
                   help=f"first try's seed (default {DEFAULT_SEED}, see docs/results.md)")
    p.add_argument("--steps", type=int, help="each try's train.steps (default: the preset's)")
    p.add_argument("--overwrite", action="store_true",
                   help="start over instead of continuing a run found in DIR")
    p.add_argument("--tries", type=int, default=DEFAULT_TRIES,
                   help="initialisations to try until one catches a lattice "
                        f"(default {DEFAULT_TRIES}; try i uses seed + {TRY_SEED_STRIDE} i)")
    p.add_argument("--jobs", type=int, default=DEFAULT_JOBS,
                   help=f"tries trained at the same time (default {DEFAULT_JOBS}: two, or "
                        f"one on a 1-core machine), one BLAS thread each; the result "
                        f"does not depend on it")
    p.add_argument("--grow-steps", type=int, default=DEFAULT_GROW_STEPS, metavar="N",
                   help="after the tries, free every unit of the caught lattice but "
                   f"the best half of its module (at least {GROW_KEEP_MIN} units), train "
                   f"N more steps at 1.5 times the try's T, at least {GROW_SEQ_LEN} "
                   f"({stage_seq_len(default)} for the preset's tries, "
                   f"{stage_seq_len(rescale_config(default))} for a redrawn try's "
                   "rescaled lattice; "
                   "sicref.grow.stage_seq_len) and evaluate the checkpoint with "
                   "the most modules, or the last where none has two (sicref.grow, "
                   f"docs/experiments.md); default {DEFAULT_GROW_STEPS}; 0: no stage")
    p.add_argument("--grow-until-two", action=argparse.BooleanOptionalAction,
                   default=None,
                   help="read each 1000-step checkpoint of the stage as it is written "
                   "and stop the stage once two readings in a row have two modules "
                   "(--grow-steps N stays the most steps); the checkpoint is picked "
                   "among the readings up to there (default: on with a stage)")
    p.add_argument("--grow-lanes", type=int, default=None, metavar="K",
                   help="with --grow-until-two: race K freeing seeds of the stage (seed + "
                   f"{LANE_SEED_STRIDE} i, lane 0 the plain stage in DIR/grow, lane i in "
                   "DIR/grow_lane{i}), --jobs at a time, and keep the first to hold two "
                   "modules (lowest step, then lowest lane; the result does not depend "
                   f"on --jobs); default {DEFAULT_GROW_LANES} with --grow-until-two, "
                   "else 1: the plain stage (sicref.lanes)")
    p.add_argument("--redraw", action=argparse.BooleanOptionalAction,
                   default=DEFAULT_REDRAW,
                   help="follow each try that gives up by its redrawn try: every unit's "
                   "recurrent weights and start entry redrawn from the try's last "
                   f"checkpoint, trained at T = {redraw_config(default).data.seq_len} and lr "
                   f"{GROW_LR:g} with a gate of its own; a lattice it catches is then "
                   f"rescaled ({rescale_config(default).train.steps} steps at T = "
                   f"{rescale_config(default).data.seq_len}) before it is evaluated "
                   "(sicref.grow.redraw_config, rescale_config, docs/experiments.md); "
                   "default on")
    # sicref.cli.main re-executes the command with TRY_THREADS BLAS threads unless the
    # environment already sets them (reexec_for_threads)
    p.set_defaults(func=_cmd_run, process_threads=TRY_THREADS)


def add_grow_commands(sub):
    from .cli import add_threads_arg

    p = sub.add_parser("grow", help="the main job's stage on one lattice: free all but "
                       "the best half of its module, train on at a longer T",
                       description="Free every unit of a caught lattice but the best half "
                       f"of its 2 m module (at least {GROW_KEEP_MIN} units), train at 1.5 "
                       "times its T (sicref.grow) into OUT/run, read every 1000-step "
                       "checkpoint in 2 m (OUT/evaluation/over_training.json) and evaluate "
                       "the one with the most modules in 2, 3 and 4 m. What `sicref run "
                       "--grow-steps N` does after its tries; calling it again continues.")
    p.add_argument("source", metavar="RUN_DIR|CKPT", help="the lattice")
    p.add_argument("--summary", required=True, metavar="SUMMARY.json",
                   help="the lattice's evaluation (sicref evaluate or sicref run); its 2 m "
                        "modules and score60 choose the units kept")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--steps", type=int, required=True, metavar="N",
                   help="the stage's steps (at most, with --until-two)")
    p.add_argument("--seed", type=int, required=True,
                   help="draws the freed units' new connections and the training data")
    p.add_argument("--reading-seed", type=int, metavar="S",
                   help="draws the readings' and the evaluation's walks (default --seed)")
    p.add_argument("--until-two", action="store_true",
                   help="stop once two readings in a row have two modules")
    p.add_argument("--no-evaluate", action="store_true",
                   help="train and read only (the main job evaluates the stage it keeps)")
    add_threads_arg(p)
    p.set_defaults(func=_cmd_grow)


def _cmd_grow(args):
    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    log = lambda line: print(line, flush=True)
    reading_seed = args.seed if args.reading_seed is None else args.reading_seed
    trained = train_stage(args.source, args.summary, args.out, args.steps, args.seed,
                          log, until_two=args.until_two, reading_seed=reading_seed)
    if not args.no_evaluate:
        eval_dir, _, lines = evaluate_stage(*trained, args.steps, reading_seed, log)
        for line in lines:
            log(line)
        log(f"figures and summary.json in {eval_dir}")
    return 0


def _cmd_run(args):
    from .cli import sigterm_exits

    with sigterm_exits():  # a stopped job stops its tries; a later call continues them
        main_job(args.preset, args.out, args.seed, args.steps, args.overwrite,
                 tries=args.tries, jobs=args.jobs, grow_steps=args.grow_steps,
                 grow_until=args.grow_until_two, redraw=args.redraw,
                 grow_lanes=args.grow_lanes)
    return 0
