"""Training: the SIC objective of one batch, one optimiser step, and the run loop.

A run directory holds config.json, metrics.jsonl and checkpoints/step_<k>.npz plus
checkpoints/latest.npz. Resuming from a checkpoint gives bit-identical results to a
run that never stopped: the checkpoint carries parameters, AdamW moments, the
plateau state and the data generator's state.
"""

import json
import os
import shutil
import sys
import time

import numpy as np
from autograd import value_and_grad
from autograd.tracer import getval

from . import checkpoint as ckpt
from .config import save_config, validate
from .data import sample_batch
from .losses import PARTS, sic_loss
from .model import init_params, rollout_permuted
from .optim import (adamw_init, adamw_update, all_finite, clip_by_global_norm,
                    global_norm, mean_of_grads, plateau_init, plateau_update)


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss or gradient, unusable run directory)."""


def batch_objective(params, batch, cfg, parts_out=None):
    """SPEC §3-§4: total SIC loss of one batch; the parts' values go to parts_out."""
    g0, states = rollout_permuted(params, batch.base, batch.perm, cfg.model.norm_eps)
    total, parts = sic_loss(states, batch.positions, cfg.loss, batch.velocities, g0)
    if parts_out is not None:
        parts_out.update({k: float(getval(v)) for k, v in parts.items()})
        parts_out["total"] = float(getval(total))
    return total


def loss_and_grad(params, batch, cfg):
    """Returns (values dict with each part and total, gradient dict)."""
    values = {}
    _, grads = value_and_grad(batch_objective)(params, batch, cfg, values)
    return values, grads


def learning_rate(plateau_lr, step, half_life=0, drop_step=0, drop_factor=0.1):
    """The plateau schedule's lr, times 0.5 ** (step / half_life) when half_life > 0,
    times drop_factor from step drop_step on when drop_step > 0."""
    lr = plateau_lr * 0.5 ** (step / half_life) if half_life > 0 else plateau_lr
    return lr * drop_factor if 0 < drop_step <= step else lr


def batch_seq_len(d, k):
    """Trajectory length of the run's k-th batch (k counts batches from 0, accumulated
    ones included; step s uses k = (s - 1) * accumulation + i):
    data.seq_len, or with data.seq_len_alt > 0, seq_len_alt for odd k."""
    return d.seq_len_alt if d.seq_len_alt > 0 and k % 2 else d.seq_len


def train_step(params, opt_state, plateau, rng, cfg, step, lr_scale=1.0, inplace=False):
    """SPEC §5: accumulate k batches, clip, AdamW, plateau. Raises TrainingError on
    a non-finite loss or gradient (parameters are then left unchanged). lr_scale
    multiplies the learning rate (the annealing stage's decay). inplace: AdamW writes
    into the arrays of params and opt_state (sicref.optim.adamw_update), as the
    training loop does; the result is the same to the bit."""
    d, o = cfg.data, cfg.optim
    grads_list, values_list = [], []
    for i in range(o.accumulation):
        seq_len = batch_seq_len(d, (step - 1) * o.accumulation + i)
        batch = sample_batch(rng, d.batch_size, seq_len, d.vmax, d.mode)
        values, grads = loss_and_grad(params, batch, cfg)
        # one batch: its gradient's norm is the one clipped below, and a finite norm
        # means finite entries, so the elementwise check runs only when it is not
        norm = global_norm(grads) if o.accumulation == 1 else None
        if not (np.isfinite(values["total"])
                and ((norm is not None and np.isfinite(norm)) or all_finite(grads))):
            bad = [k for k, v in values.items() if not np.isfinite(v)]
            bad += [f"grad[{k}]" for k, g in grads.items() if not np.all(np.isfinite(g))]
            raise TrainingError(f"non-finite values at step {step}: {', '.join(bad)}")
        grads_list.append(grads)
        values_list.append(values)
    grads = mean_of_grads(grads_list)
    grads, grad_norm = clip_by_global_norm(grads, o.clip_norm, norm)
    lr_used = lr_scale * learning_rate(plateau["lr"], step, o.lr_half_life, o.lr_drop_step,
                                       o.lr_drop_factor)
    params, opt_state = adamw_update(params, grads, opt_state, lr_used, o.beta1,
                                     o.beta2, o.eps, o.weight_decay, inplace=inplace)
    values = {k: float(np.mean([v[k] for v in values_list])) for k in values_list[0]}
    plateau = plateau_update(plateau, values["total"], o.plateau_factor,
                             o.plateau_patience, o.plateau_window, o.plateau_threshold,
                             o.min_lr)
    values.update(lr=lr_used, grad_norm=grad_norm)
    return params, opt_state, plateau, values


# -- run directory -----------------------------------------------------------------------

def prepare_run_dir(out, overwrite=False):
    """Create out; refuse a non-empty one unless overwrite is set and it is a run dir."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise TrainingError(f"--out {out} exists and is not a directory")
    if os.path.isdir(out) and os.listdir(out):
        if not overwrite:
            raise TrainingError(f"run directory {out} is not empty; pass --resume "
                                f"{out}/checkpoints/latest.npz to continue it or "
                                f"--overwrite to replace it")
        if not os.path.exists(os.path.join(out, "config.json")):
            raise TrainingError(f"refusing to overwrite {out}: it is not a sicref run "
                                f"directory (no config.json)")
        shutil.rmtree(out)
    os.makedirs(os.path.join(out, "checkpoints"), exist_ok=True)


# glibc: keep freed memory in the process instead of returning each large temporary
# to the system and faulting it in again on the next step (same results, about 8 %
# faster for the laptop preset, benchmarks/bench_train.py). Values the caller's
# environment already sets are kept.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(256 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
              "MALLOC_TOP_PAD_": str(256 << 20)}


# The environment variables that fix the BLAS thread count (OpenMP, OpenBLAS, MKL). They
# are read once, when NumPy loads its BLAS, so they must be set before the process
# imports NumPy: a child process gets them in its environment, `sicref train --threads`
# re-executes itself with them.
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


# What fixes this process's BLAS thread count: the THREAD_VARS (None: unset) and the
# number of CPUs (the count when none is set). Stored in every checkpoint, so that a
# resume under other settings, which continues correctly but sums in another order,
# says so. Read once, at import: BLAS took its thread count from the environment when
# NumPy was loaded, before this module, and later changes to os.environ do not reach it.
PROCESS_BLAS_THREADS = {**{name: os.environ.get(name) for name in THREAD_VARS},
                        "cpus": os.cpu_count()}


def thread_env(environ, threads):
    """A copy of environ with every name of THREAD_VARS set to threads."""
    env = dict(environ)
    env.update({name: str(threads) for name in THREAD_VARS})
    return env


def train_command(cfg_path, run_dir, threads=None, max_seconds=None, init_from=None):
    """(argv, env) for `sicref train` in a subprocess that starts run_dir, or continues
    it from its latest checkpoint; a run dir left without one (its process died before
    the first checkpoint) is started over. threads: BLAS threads (None: inherited).
    init_from: a checkpoint whose parameters a new start begins from (--init-from).
    The environment gains MALLOC_ENV where it does not set those names."""
    cmd = [sys.executable, "-m", "sicref", "train", "--config", cfg_path, "--out", run_dir]
    if max_seconds is not None:
        cmd += ["--max-seconds", str(max_seconds)]
    latest = os.path.join(run_dir, "checkpoints", "latest.npz")
    if os.path.exists(latest):
        cmd += ["--resume", latest]
    else:
        if init_from is not None:
            cmd += ["--init-from", init_from]
        if os.path.isdir(run_dir) and os.listdir(run_dir):
            cmd += ["--overwrite"]
    return cmd, child_env(threads)


def child_env(threads=None):
    """The environment of a training subprocess: this one's, plus MALLOC_ENV where it
    does not set those names, with `threads` BLAS threads (None: inherited)."""
    env = dict(os.environ)
    for name, value in MALLOC_ENV.items():
        env.setdefault(name, value)
    return thread_env(env, threads) if threads else env


def _truncate_metrics(path, last_step):
    """On resume, drop log lines written after the checkpoint we resume from (and a
    last line cut short by a stopped writer)."""
    records = ckpt.read_jsonl(path, partial_ok=True)
    if os.path.exists(path):
        ckpt.atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records
                                             if r["step"] <= last_step))


def _format_eta(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def progress_line(step, total_steps, values, rate, give_up=None, last_step=None):
    """One progress line. give_up: the step at which a run whose annealing gate has not
    opened ends; the ETA is then to that step, as the gate decides there. last_step:
    the run trains in chunks (the stage of `sicref run --grow-until-two`) and this chunk
    ends at total_steps; the line counts to last_step and its ETA is to there."""
    if last_step is not None and last_step > total_steps:
        until, shown = last_step, last_step
        note = f" (at most; this part ends at step {total_steps})"
    else:
        until = give_up if give_up and step < give_up < total_steps else total_steps
        shown = total_steps
        note = (f" (to step {until}, where the run gives up unless the gate opens)"
                if until != total_steps else "")
    eta = (until - step) / rate if rate > 0 else float("nan")
    parts = " ".join(f"{k[:3]} {values[k]:.4g}" for k in PARTS)
    return (f"step {step}/{shown} | total {values['total']:.5g} | {parts} | "
            f"lr {values['lr']:.2e} | {rate:.1f} steps/s | ETA {_format_eta(eta)}{note}")


def train(cfg, out, resume=None, overwrite=False, log=None, max_seconds=None,
          init_from=None, last_step=None):
    """Train cfg into run directory out; returns the final params.

    resume: a checkpoint (or run directory) to continue from; its config must equal
    cfg except for train.steps. log: a callable taking a progress line (default: print
    to stderr). max_seconds: stop early, with a checkpoint, once this much wall time
    has passed (a later resume continues exactly). init_from: start a new run from
    the parameters of another checkpoint (fresh optimiser state and data stream), e.g.
    to continue a run at another learning rate. last_step: this run is one chunk of a
    longer one that ends there; the progress lines count to it (progress_line).
    """
    validate(cfg)
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    metrics_path = os.path.join(out, "metrics.jsonl")
    ckpt_dir = os.path.join(out, "checkpoints")
    gridness_path = os.path.join(out, "gridness.jsonl")
    if resume is not None:
        state = ckpt.load_checkpoint(resume)
        _check_resumable(state["config"], cfg, resume)
        before, now = state["blas_threads"], PROCESS_BLAS_THREADS
        if before is not None and before != now:
            log(f"warning: {resume} was trained with BLAS thread settings {before}, this "
                f"process has {now}; training continues, but another thread count sums "
                f"in another order, so the result will not be bit-identical to a run "
                f"that never stopped (docs/performance.md, \"BLAS threads and results\")")
        params, opt_state, plateau = state["params"], state["opt_state"], state["plateau"]
        schedule = state["schedule"]
        rng = np.random.Generator(np.random.PCG64())
        rng.bit_generator.state = state["rng_state"]
        start = state["step"]
        os.makedirs(ckpt_dir, exist_ok=True)
        _truncate_metrics(metrics_path, start)
        _truncate_metrics(gridness_path, start)
        last_good = ckpt.resolve_checkpoint(resume)
    else:
        rng = np.random.default_rng(cfg.train.seed)
        params = init_params(rng, cfg.model.n_units, cfg.model.hidden, cfg.model.n_layers)
        if init_from is not None:
            params = _params_from(init_from, params)
        prepare_run_dir(out, overwrite)
        opt_state, plateau = adamw_init(params), plateau_init(cfg.optim.lr)
        start, last_good, schedule = 0, None, ckpt.initial_schedule()
    save_config(cfg, os.path.join(out, "config.json"))

    def save(step):
        path = os.path.join(ckpt_dir, f"step_{step}.npz")
        args = (step, params, opt_state, plateau, rng.bit_generator.state, cfg, schedule,
                PROCESS_BLAS_THREADS)
        try:
            ckpt.save_checkpoint(path, *args)
            ckpt.save_checkpoint(os.path.join(ckpt_dir, "latest.npz"), *args)
        except OSError as e:  # a full disk, say: the write is atomic, nothing is half
            where = last_good or "none (no checkpoint written yet)"
            raise TrainingError(f"could not write the checkpoint of step {step} "
                                f"({e.strerror or e}); training stopped. Last good "
                                f"checkpoint: {where}") from None
        return path

    t0, steps_done = time.perf_counter(), 0
    o = cfg.optim
    total_steps = _end_step(cfg, schedule)
    if start >= total_steps:
        log(f"nothing to do: the run in {out} already ended at step {start}")
        return params
    with open(metrics_path, "a") as metrics:
        for step in range(start + 1, cfg.train.steps + 1):
            try:
                params, opt_state, plateau, values = train_step(
                    params, opt_state, plateau, rng, cfg, step,
                    _anneal_scale(cfg, schedule, step), inplace=True)
            except TrainingError as e:
                where = last_good or "none (no checkpoint written yet)"
                raise TrainingError(f"{e}; training stopped. Last good checkpoint: "
                                    f"{where}") from None
            steps_done += 1
            if (o.anneal_lr > 0 and step % o.anneal_check_every == 0
                    and step >= o.anneal_check_from):
                reading, new_schedule = _check_gridness(params, cfg, step, gridness_path,
                                                        log, schedule)
                if reading["switch"]:
                    opt_state, plateau = adamw_init(params), plateau_init(o.anneal_lr)
                schedule = new_schedule
                total_steps = _end_step(cfg, schedule)
            if step % cfg.train.log_every == 0 or step == total_steps:
                elapsed = time.perf_counter() - t0
                record = {"step": step, **values, "seconds": elapsed}
                metrics.write(json.dumps(record) + "\n")
                metrics.flush()
                give_up = o.anneal_give_up if (o.anneal_lr > 0
                                               and schedule["stage"] == 1) else None
                log(progress_line(step, total_steps, values, steps_done / elapsed, give_up,
                                  last_step))
            out_of_time = (max_seconds is not None
                           and time.perf_counter() - t0 > max_seconds)
            if step % cfg.train.checkpoint_every == 0 or step == total_steps or out_of_time:
                last_good = save(step)
            if out_of_time:
                log(f"stopping at step {step}: --max-seconds {max_seconds} reached")
                break
            if step == total_steps:
                break
    return params


def run_ended(run_dir, cfg):
    """Whether the run in run_dir has nothing left to do under cfg: its latest
    checkpoint is at its last step (train.steps, the end of annealing, or where it gave
    up). False when it has no checkpoint yet."""
    latest = os.path.join(run_dir, "checkpoints", "latest.npz")
    if not os.path.exists(latest):
        return False
    state = ckpt.load_checkpoint(latest)
    return state["step"] >= _end_step(cfg, state["schedule"])


def _end_step(cfg, schedule):
    """The last step: train.steps, or anneal_steps after the annealing switch (the
    confirming reading with anneal_end_at_confirm), or where the run gave up."""
    if schedule["gave_up_step"] is not None:
        return schedule["gave_up_step"]
    if cfg.optim.anneal_end_at_confirm and schedule.get("confirmed_step") is not None:
        return min(cfg.train.steps, schedule["confirmed_step"])
    if schedule["stage"] == 2:
        return min(cfg.train.steps, schedule["switch_step"] + cfg.optim.anneal_steps)
    return cfg.train.steps


def _anneal_scale(cfg, schedule, step):
    """After the switch, lr = anneal_lr * 0.5 ** ((step - switch) / anneal_half_life)."""
    hl = cfg.optim.anneal_half_life
    if schedule["stage"] == 2 and hl > 0:
        return 0.5 ** ((step - schedule["switch_step"]) / hl)
    return 1.0


def _check_gridness(params, cfg, step, path, log, schedule):
    """The annealing gate: score the current network, decide, append the reading to
    gridness.jsonl; returns (reading, new schedule).

    In stage 1 the first reading at or above the threshold is the switch ("switch":
    true); with no switch by step anneal_give_up the run gives up. In stage 2 the first
    reading at the threshold again confirms the lattice ("confirmed": true); with none
    in the anneal_confirm readings after the switch the run gives up. "gave_up" marks
    the reading where a run gave up; "stage" is the stage the reading was taken in.
    """
    from .evaluate import grid_check

    o = cfg.optim
    t = time.perf_counter()
    fraction, median = grid_check(params, cfg, n_walks=o.anneal_walks,
                                  n_steps=o.anneal_walk_steps)
    seconds = time.perf_counter() - t
    at_threshold = fraction >= o.anneal_grid_fraction
    new = dict(schedule)
    switch = confirmed = gave_up = False
    if schedule["stage"] == 1:
        if at_threshold:
            switch = True
            new.update(stage=2, switch_step=step)
        elif o.anneal_give_up and step >= o.anneal_give_up:
            gave_up = True
    elif not schedule["confirmed"]:
        if at_threshold:
            confirmed = True
            new.update(confirmed=True, confirmed_step=step)
        elif o.anneal_confirm and step >= schedule["switch_step"] + (
                o.anneal_confirm * o.anneal_check_every):
            gave_up = True
    if gave_up:
        new["gave_up_step"] = step
    record = {"step": step, "grid_fraction": fraction, "median_score60": median,
              "stage": schedule["stage"], "switch": switch, "confirmed": confirmed,
              "gave_up": gave_up, "seconds": seconds}
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
    log(f"step {step}: gridness check: {fraction:.0%} grid units, median score60 "
        f"{median:.2f} ({seconds:.1f} s)")
    if switch:
        log(f"step {step}: grid fraction {fraction:.0%} >= {o.anneal_grid_fraction:.0%}; "
            f"annealing: AdamW restarted at lr {o.anneal_lr:g} until step "
            f"{_end_step(cfg, new)}")
    if confirmed:
        log(f"step {step}: the lattice is still there after the switch (confirmed)"
            + ("; the run ends here (optim.anneal_end_at_confirm)"
               if o.anneal_end_at_confirm else ""))
    if gave_up:
        why = (f"no reading reached {o.anneal_grid_fraction:.0%} by step {step}"
               if schedule["stage"] == 1 else
               f"the lattice of step {schedule['switch_step']} did not come back in "
               f"{o.anneal_confirm} readings")
        log(f"step {step}: giving up: {why}")
    return record, new


def _params_from(path, like):
    """Parameters of a checkpoint, checked against the shapes cfg needs."""
    loaded = ckpt.load_checkpoint(path)["params"]
    for name, p in like.items():
        if name not in loaded or loaded[name].shape != p.shape:
            got = loaded[name].shape if name in loaded else "missing"
            raise TrainingError(f"--init-from {path}: parameter {name!r} is {got}, this "
                                f"config needs {p.shape}")
    return loaded


def _check_resumable(stored, cfg, path):
    from dataclasses import replace

    if replace(stored, train=replace(stored.train, steps=cfg.train.steps)) != cfg:
        raise TrainingError(f"checkpoint {path} was written with a different config; "
                            f"resume with the run's own config.json (only train.steps "
                            f"may change)")
