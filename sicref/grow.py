"""The main job's optional second stage (`sicref run --grow-steps N`): beside a caught
lattice, re-initialise every unit but the best half of its module (at least 28 units)
and train on with longer trajectories (docs/experiments.md section 5, "Fresh units
beside a SIC lattice" and "The freeing stage in the main job").

Not in the paper. At laptop size the main job catches one lattice (one module); units
outside it are silent or weakly tuned. Freed (fresh random recurrent connections and
start entries, every other parameter kept) and trained with SIC at T = 30 and a
constant lr 1e-4, on main seeds 0 and 3 they formed a second, finer module beside the
first within 5-10 thousand steps (commensurate: about sqrt(3) finer and turned by 30
degrees), seen with 100-step evaluation walks (docs/analysis.md section 11). Such a
module forms and fades over thousands of steps, so the main job evaluates the
checkpoint whose 2 m reading has the most modules, or the last one where no reading
has two (pick_checkpoint). The stage's
settings are the GROW_* constants below; everything else is the caught try's config.
"""

import json
import os

import numpy as np

from .checkpoint import (atomic_write_text, load_checkpoint, resolve_checkpoint,
                         save_start_checkpoint)
from .config import replace
from .evaluate import ModuleRule, WalkConfig

GROW_SEQ_LEN = 30  # trajectory length of the stage (the tries train at the preset's)
GROW_LR = 1e-4  # constant (the plateau schedule still applies); no annealing gate
GROW_CHECKPOINT_EVERY = 1000
# `--grow-until-two` stops the stage once this many 1000-step readings in a row have two
# modules (as the tries' gate confirms a lattice with two readings).
GROW_CONFIRM = 2
# The stage's evaluation: 100-step walks (a fine lattice blurs over 400-step walks when
# the network drifts, docs/analysis.md section 11), 800 of them so that the ratemaps
# have as many samples as the main evaluation's 200 x 400; grid units whose SAC and
# spectral periods disagree by more than 20 % are not clustered (SPEC §7.5).
GROW_WALK = WalkConfig(n_walks=800, n_steps=100)
# The stage's checkpoint readings: half as many of the same walks.
GROW_READING_WALK = WalkConfig(n_walks=GROW_WALK.n_walks // 2, n_steps=GROW_WALK.n_steps)
GROW_MODULES = ModuleRule(max_period_mismatch=0.2)
# How many module units keep their connections: half of the caught 2 m module (its
# units with the highest 2 m score60), but at least GROW_KEEP_MIN; every other unit is
# freed. Chosen from four caught lattices (docs/experiments.md, "The freeing stage in the
# main job"): keeping the whole module gave no second module where the module was large
# (main seeds 2, 3, 4: 63-91 units), keeping 28 of a large module lost the lattice on two
# of three, keeping half of a small one (main seed 0: 14 of 28) gave no second module.
GROW_KEEP_FRACTION = 0.5
GROW_KEEP_MIN = 28
LAYOUT_FILE = "freed.json"


def _read_summary(summary, n, step, arena, where, fields=("unit", "module")):
    """The per-unit records of `arena`, each with `fields`, checked against the
    network's unit count n and (if given) its step. summary: a dict or the path of a
    summary.json."""
    try:
        if not isinstance(summary, dict):
            with open(summary) as f:
                summary = json.load(f)
        records = summary["arenas"][arena]["units"]
        missing = [k for r in records for k in fields if k not in r]
        if missing:
            raise KeyError(missing[0])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{where}: not an evaluation summary with a {arena} arena "
                         f"({type(e).__name__}: {e})") from None
    if len(records) != n:
        raise ValueError(f"{where}: the summary has {len(records)} units, the network {n}")
    if step is not None and summary.get("step") != step:
        raise ValueError(f"{where}: the summary evaluated step {summary.get('step')}, "
                         f"the checkpoint is at step {step}")
    return records


def units_outside_modules(summary, n, step=None, arena="2m", where="summary"):
    """The units that an evaluation summary (a dict, or the path of a summary.json
    written by `sicref evaluate` or `sicref run`) puts in no module in `arena`.

    n: the network's unit count; step (if given): the checkpoint's step, which must be
    the step the summary evaluated. Raises ValueError naming `where` otherwise."""
    records = _read_summary(summary, n, step, arena, where)
    return np.array(sorted(r["unit"] for r in records if r["module"] < 0), dtype=int)


def keep_count(module_units):
    """How many of a caught module's units the stage keeps (GROW_KEEP_FRACTION of them,
    at least GROW_KEEP_MIN, at most all)."""
    return min(module_units, max(GROW_KEEP_MIN, int(module_units * GROW_KEEP_FRACTION)))


def units_to_free(summary, n, step=None, keep=None, where="summary"):
    """Every unit outside the 2 m modules of `summary` (as units_outside_modules) and
    the module units beyond the `keep` with the highest 2 m score60, ascending.
    keep=None: keep_count(number of module units)."""
    if keep is not None and keep < 0:
        raise ValueError(f"keep must be >= 0 module units, got {keep}")
    records = _read_summary(summary, n, step, "2m", where,
                            fields=("unit", "module", "score60"))
    ranked = sorted((r for r in records if r["module"] >= 0),
                    key=lambda r: (-r["score60"], r["unit"]))
    if keep is None:
        keep = keep_count(len(ranked))
    kept = {r["unit"] for r in ranked[:keep]}
    return np.array(sorted(r["unit"] for r in records if r["unit"] not in kept), dtype=int)


def free_units(params, units, rng):
    """A copy of params with the units' recurrent weights and start entries redrawn:
    the entries W(v)[i, :] and W(v)[:, i] of the last MLP layer (weights and biases,
    drawn as in sicref.model.init_params) and g0_raw[i], for every i in units."""
    params = {k: v.copy() for k, v in params.items()}
    n = len(params["g0_raw"])
    last = max(int(k[5:]) for k in params if k.startswith("mlp/W"))
    W, b = params[f"mlp/W{last}"], params[f"mlp/b{last}"]
    fan_in = W.shape[0]
    chosen = np.zeros((n, n), bool)
    chosen[units, :] = True
    chosen[:, units] = True
    cols = np.flatnonzero(chosen.ravel())  # W(v)[i, j] is output i * n + j
    bound = 1.0 / np.sqrt(fan_in)
    W[:, cols] = rng.uniform(-bound, bound, size=(fan_in, cols.size))
    b[cols] = rng.uniform(-bound, bound, size=cols.size)
    params["g0_raw"][units] = rng.normal(0.0, 1.0, size=len(units))
    return params


def pick_checkpoint(rows):
    """The step of the stage checkpoint that the main job evaluates, from the 2 m
    readings of every checkpoint (rows as written by sicref.evaluate.write_over_training):
    the most modules, then the largest smallest module (the reading farthest from the
    module-size rule's edge, where the count turns on the walks drawn), then the
    highest grid fraction, then the later step. A second module forms and fades over
    thousands of steps (docs/experiments.md, "The freeing stage in the main job"); the
    readings and the evaluation use different walks. Where no reading has two modules
    there is nothing to select for, and the last step is picked: the network after all
    the stage's training, not an early checkpoint that is still changing."""
    if not rows:
        raise ValueError("no checkpoint readings to pick from")
    if max(len(r["modules"]["sizes"]) for r in rows) < 2:
        return max(r["step"] for r in rows)

    def key(r):
        sizes = r["modules"]["sizes"]
        return len(sizes), min(sizes, default=0), r["grid_fraction"], r["step"]

    return max(rows, key=key)["step"]


def stage_seq_len(cfg):
    """The stage's T: 1.5 times the T that cfg (the lattice's) trained at, at least
    GROW_SEQ_LEN. A caught try's lattice (T = 15) grows at T = 30, a redrawn try's
    (T = 30) at T = 45. On redrawn lattices the stage at T = 30 gave no second module
    (0 of 3); on five, at T = 60 three formed one in 2 m and two turned square, at
    T = 45 two formed one in every arena, two more in two arenas, and none turned square
    (docs/experiments.md, "A second module beside a redrawn lattice"): the fine module
    forms while the kept lattice moves to the longer T's period."""
    return max(GROW_SEQ_LEN, 3 * cfg.data.seq_len // 2)


def grow_config(cfg, steps, seed):
    """The stage's config: cfg (the caught try's) at T = stage_seq_len(cfg) and a
    constant lr GROW_LR without the annealing gate, for `steps` steps from data seed
    `seed`."""
    return replace(cfg, data={"seq_len": stage_seq_len(cfg)},
                   optim={"lr": GROW_LR, "anneal_lr": 0.0, "anneal_half_life": 0,
                          "anneal_give_up": 0, "anneal_confirm": 0,
                          "anneal_check_from": 0, "anneal_end_at_confirm": False},
                   train={"steps": steps, "seed": seed,
                          "checkpoint_every": GROW_CHECKPOINT_EVERY})


def stage_layout(source, summary, out, seed, keep=None):
    """The stage's layout (the source checkpoint, its step, the seed and the units to
    free, units_to_free) and the loaded source state. Raises TrainingError when out
    already holds a stage grown from another checkpoint, seed or other units, an
    unreadable out/freed.json, or anything but a stage (no freed.json). Returns
    (checkpoint path, state, layout)."""
    from .train import TrainingError

    path = resolve_checkpoint(source)
    state = load_checkpoint(path)
    n = len(state["params"]["g0_raw"])
    units = units_to_free(summary, n, state["step"], keep, where=f"{out}: the summary")
    layout = {"source": os.path.abspath(path), "source_step": state["step"],
              "seed": seed, "freed": [int(u) for u in units]}
    layout_path = os.path.join(out, LAYOUT_FILE)
    if (not os.path.exists(layout_path) and os.path.isdir(out)
            and set(os.listdir(out)) - {"evaluation"}):
        raise TrainingError(f"refusing to grow into {out}: it is not empty and holds no "
                            f"{LAYOUT_FILE}, so it is not a stage's directory")
    if os.path.exists(layout_path):
        try:
            with open(layout_path) as f:
                before = json.load(f)
        except (OSError, ValueError) as e:
            before = f"{type(e).__name__}: {e}"
        if not isinstance(before, dict):
            raise TrainingError(f"{layout_path} cannot be read ({before}); remove {out} "
                                f"to grow again")
        if before != layout:
            raise TrainingError(
                f"{out} was grown from {before.get('source')} (step "
                f"{before.get('source_step')}, seed {before.get('seed')}, "
                f"{len(before.get('freed', []))} units freed), not from {path} (step "
                f"{state['step']}, seed {seed}, {len(units)} units); remove {out} to "
                f"grow again from this one")
    return path, state, layout


def grow(source, summary, out, steps, seed, log=print, keep=None, last_step=None):
    """Free the units of checkpoint `source` that `summary` (its evaluation) puts in no
    2 m module, and its module units beyond the `keep` best (units_to_free; None: the
    stage's rule, keep_count), then train `steps` steps (grow_config) into out/run. The
    freeing draws from `seed`, the data stream too. Calling it again continues out/run
    (train.steps may grow); a run grown from another checkpoint, seed or other units,
    or an unreadable out/freed.json, is refused (stage_layout). last_step: the stage
    trains in chunks (grow_until_two) and ends there at most; the progress lines count
    to it.

    Returns (run directory, layout dict: source, step, freed units)."""
    from .train import train

    path, state, layout = stage_layout(source, summary, out, seed, keep)
    units = np.array(layout["freed"], dtype=int)
    n = len(state["params"]["g0_raw"])
    cfg = grow_config(state["config"], steps, seed)
    run_dir = os.path.join(out, "run")
    latest = os.path.join(run_dir, "checkpoints", "latest.npz")
    os.makedirs(out, exist_ok=True)
    if os.path.exists(latest):
        log(f"grow: continuing {run_dir}")
        train(cfg, run_dir, resume=latest, log=log, last_step=last_step)
        return run_dir, layout
    kept = n - len(units)
    which = (f"every unit but the {kept} module units with the highest 2 m score60"
             if kept else "its evaluation has no 2 m module, so every unit")
    log(f"grow: freeing {len(units)} of {n} units of {path} ({which}), then {steps} "
        f"steps at T = {cfg.data.seq_len}, lr {GROW_LR:g} -> {run_dir}")
    start = os.path.join(out, "start.npz")
    params = free_units(state["params"], units, np.random.default_rng(seed))
    atomic_write_text(os.path.join(out, LAYOUT_FILE), json.dumps(layout, indent=1))
    save_start_checkpoint(start, params, cfg, seed)
    train(cfg, run_dir, init_from=start, overwrite=True, log=log,
          last_step=last_step)
    return run_dir, layout


def two_modules_held(rows, confirm=None):
    """Whether the last `confirm` (None: GROW_CONFIRM) checkpoint readings all have two
    or more modules: where `sicref run --grow-until-two` stops the stage."""
    confirm = GROW_CONFIRM if confirm is None else confirm
    if confirm < 1:
        raise ValueError(f"confirm must be >= 1 readings, got {confirm}")
    return len(rows) >= confirm and all(len(r["modules"]["sizes"]) >= 2
                                        for r in rows[-confirm:])


def grow_until_two(source, summary, out, steps, seed, read, log=print, keep=None):
    """grow() in chunks of GROW_CHECKPOINT_EVERY steps, reading each new checkpoint with
    read(path) -> a row as sicref.evaluate.checkpoint_reading writes, until
    two_modules_held (the second module formed and stayed for GROW_CONFIRM readings)
    or `steps` steps. The training is the same as grow()'s to the bit, chunked or
    not; it only stops sooner. Checkpoints that a previous call trained are read, not
    retrained. Returns (run directory, layout, the readings so far, stopped early?)."""
    _, _, layout = stage_layout(source, summary, out, seed, keep)
    run_dir = os.path.join(out, "run")
    every = GROW_CHECKPOINT_EVERY
    ends = list(range(every, steps, every)) + [steps]
    rows = []
    for end in ends:
        ckpt = os.path.join(run_dir, "checkpoints", f"step_{end}.npz")
        if not os.path.exists(ckpt):
            log(f"grow: training to step {end} (at most {steps}; the stage stops once "
                f"{GROW_CONFIRM} readings in a row have two modules)")
            grow(source, summary, out, end, seed, log=log, keep=keep, last_step=steps)
        rows.append(read(ckpt))
        if two_modules_held(rows):
            return run_dir, layout, rows, end < steps
    return run_dir, layout, rows, False


# `sicref run --redraw`: a try whose gate gave up is not dropped; its recurrent layer is
# redrawn (every unit freed, free_units) and it trains on at T = REDRAW_SEQ_LEN and the
# stage's lr with a gate of its own (docs/experiments.md, "Redrawing the recurrent layer
# of a try that gave up"). At T = 45 the redrawn tries caught a lattice far more often
# than at T = 30 (7 of 13 against 1 of the same 13, "Redrawn at T = 45"), coarser (1.0-1.35
# m) and often weak; 1000 steps at T = 30 (RESCALE_STEPS, rescale_config) then made them
# strong lattices at 0.85-0.9 m ("Then back to T = 30"), the stage's next T is 45 again.
# The gate drops the lr tenfold once a lattice is seen; the run ends at the reading that
# confirms it (anneal_end_at_confirm): the rescale starts from that checkpoint
# (rescale_source), so the annealing's later steps would be trained for nothing. It
# gives up at step 3000: of the redrawn tries at T = 45 measured (docs/experiments.md,
# "Redrawn at T = 45", "The sequence in the main job", "Two freeing seeds side by
# side"), every gate that opened did so at 1500-3000, and the three rescales that lost
# their lattice came from gates that opened late; a redrawn try that finds nothing
# stops 1000 steps sooner than with the earlier give-up at 4000 (about two minutes).
REDRAW_SEQ_LEN = 45
REDRAW_ANNEAL = {"lr": GROW_LR, "anneal_lr": GROW_LR / 10, "anneal_check_every": 500,
                 "anneal_check_from": 1000, "anneal_give_up": 3000, "anneal_confirm": 2,
                 "anneal_steps": 1000, "anneal_half_life": 1000,
                 "anneal_end_at_confirm": True}
# the longest redrawn run: a switch at the give-up step, then anneal_steps more
REDRAW_STEPS = REDRAW_ANNEAL["anneal_give_up"] + REDRAW_ANNEAL["anneal_steps"]
RESCALE_STEPS = 1000
# A rescale can lose the lattice: on 3 of 10 T = 45 lattices it became a square one (33 %
# -> 4 % grid units), a sheared one (56 % -> 30 %) or a weak one (34 % -> 12 %), where the
# other seven read as many grid units as the confirmed lattice or more (41-97 % -> 78-98
# %; docs/experiments.md, "The sequence in the main job"). The main job counts a
# rescaled lattice whose gate reading falls more than RESCALE_TOLERANCE below the
# confirming reading as lost and goes on to the next try (rescale_held).
RESCALE_TOLERANCE = 0.1


def redraw_config(cfg):
    """The config a redrawn try trains with: cfg (the try's) at T = REDRAW_SEQ_LEN with
    the REDRAW_ANNEAL gate (its walks and threshold are cfg's), REDRAW_STEPS steps at
    most, checkpoints at every reading; the seed stays the try's."""
    return replace(cfg, data={"seq_len": REDRAW_SEQ_LEN}, optim=REDRAW_ANNEAL,
                   train={"steps": REDRAW_STEPS,
                          "checkpoint_every": REDRAW_ANNEAL["anneal_check_every"]})


def rescale_config(cfg):
    """The config a redrawn try's lattice is rescaled with before it is evaluated and
    grown: what the stage trains a caught try's lattice with (grow_config of cfg, the
    try's config: T = stage_seq_len(cfg), lr GROW_LR, no gate), for RESCALE_STEPS steps,
    with the try's seed."""
    return grow_config(cfg, RESCALE_STEPS, cfg.train.seed)


def confirming_reading(run_dir, cfg):
    """The gate reading (a row of run_dir/gridness.jsonl) that confirmed the redrawn
    try's lattice (the switch's, when cfg.optim.anneal_confirm is 0). Raises
    TrainingError when there is none."""
    from .checkpoint import read_jsonl
    from .train import TrainingError

    need = "confirmed" if cfg.optim.anneal_confirm else "switch"
    readings = read_jsonl(os.path.join(run_dir, "gridness.jsonl"), partial_ok=True)
    found = next((r for r in readings if r.get(need)), None)
    if found is None:
        raise TrainingError(f"{run_dir}: no gate reading {need} a lattice, so there is "
                            f"nothing to rescale")
    return found


def rescale_source(run_dir, cfg):
    """The checkpoint of a redrawn try that the rescale starts from: the one of its
    confirming_reading. Raises TrainingError when the run has no such reading or
    checkpoint."""
    from .train import TrainingError

    step = confirming_reading(run_dir, cfg)["step"]
    path = os.path.join(run_dir, "checkpoints", f"step_{step}.npz")
    if not os.path.exists(path):
        need = "confirmed" if cfg.optim.anneal_confirm else "switch"
        raise TrainingError(f"{run_dir}: the lattice was {need} at step {step}, but "
                            f"{path} is missing (the redrawn try writes a checkpoint at "
                            f"every reading)")
    return path


def rescale_readings(run_dir, rescaled):
    """The gate's reading of the redrawn try in run_dir that confirmed its lattice, and
    the same reading (sicref.evaluate.grid_check: the gate's walks and seed) of the
    rescaled network in `rescaled` (a run directory or checkpoint), as grid fractions."""
    from .config import load_config
    from .evaluate import grid_check

    cfg = load_config(os.path.join(run_dir, "config.json"))
    before = confirming_reading(run_dir, cfg)["grid_fraction"]
    params = load_checkpoint(resolve_checkpoint(rescaled))["params"]
    after, _ = grid_check(params, cfg, n_walks=cfg.optim.anneal_walks,
                          n_steps=cfg.optim.anneal_walk_steps)
    return before, after


def rescale_held(before, after):
    """Whether a rescaled lattice still stands: its reading at most RESCALE_TOLERANCE
    below the confirming one."""
    return after >= before - RESCALE_TOLERANCE


def rescale(run_dir, try_cfg, out, log=print):
    """Train the lattice of the redrawn try in run_dir (rescale_source) for
    RESCALE_STEPS steps under rescale_config(try_cfg) into `out`; a finished rescale is
    kept, an interrupted one continued. Returns out."""
    from .train import run_ended, train

    cfg = rescale_config(try_cfg)
    latest = os.path.join(out, "checkpoints", "latest.npz")
    if run_ended(out, cfg):
        log(f"rescale: {out} is done")
    elif os.path.exists(latest):
        log(f"rescale: continuing {out}")
        train(cfg, out, resume=latest, log=log)
    else:
        from .config import load_config

        source = rescale_source(run_dir, load_config(os.path.join(run_dir, "config.json")))
        log(f"rescale: the redrawn lattice ({source}), {cfg.train.steps} steps at T = "
            f"{cfg.data.seq_len}, lr {cfg.optim.lr:g} -> {out}")
        train(cfg, out, init_from=source, overwrite=True, log=log)
    return out


def write_redraw_start(source, path, cfg):
    """The start of a redrawn try: checkpoint `source` (the try's latest) with every
    unit freed (free_units, drawn from cfg.train.seed), written to `path` with config
    cfg (redraw_config of the try's). The same source and cfg give the same file."""
    state = load_checkpoint(resolve_checkpoint(source))
    n = len(state["params"]["g0_raw"])
    params = free_units(state["params"], np.arange(n),
                        np.random.default_rng(cfg.train.seed))
    save_start_checkpoint(path, params, cfg, cfg.train.seed)  # written atomically
    return path
