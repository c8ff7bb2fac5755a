"""Evaluation of a trained network: walks in arenas, ratemaps, gridness, modules (SPEC §7).

`evaluate(params, ...)` returns a JSON-ready summary plus the arrays the figures need;
`evaluate_run(...)` does that for a run directory or checkpoint and writes summary.json
and the figures of `sicref.plots`.
"""

import functools
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, is_dataclass
from typing import Optional

import numpy as np

from .checkpoint import atomic_write_text, load_checkpoint, resolve_checkpoint
from .data import sample_batch
from .gridness import (GRID_THRESHOLD, RELIABILITY_THRESHOLD, find_modules, grid_scores,
                       ratemaps, spatial_coherence, split_half_reliability)
from .lattice import spectral_period
from .losses import neural_sq_distances
from .model import rollout
from .modules import drop_small_modules, module_min_size

# A module must hold this fraction of the grid units it is drawn from (and at least 3)
# to be counted.
MIN_MODULE_FRACTION = 0.1
# A grid unit joins the period clustering only if its ratemap's spatial coherence is at
# least this (docs/analysis.md: scattered single-bin maps can pass the score60
# threshold and would otherwise form "modules" of their own).
MIN_COHERENCE = 0.5
# ... and only if at most this share of its activity falls in the first START_STEPS
# steps of the evaluation walks. Every walk starts at the arena centre with the network
# at g_0; some units fire only while the state is still near g_0 (a code of "just
# started", not of place), which puts a bright spot near the centre of their ratemap
# that can pass the score60 threshold (docs/analysis.md). A unit active evenly in time
# has a share of START_STEPS / walk length (0.05 for the default 400-step walks).
START_STEPS = 20
MAX_START_SHARE = 0.25
# SPEC §7.5 cross-check: a grid unit whose SAC period (six nearest peaks) and spectral
# period (power-spectrum peak) differ by more than this relative amount is reported.
# A coarse lattice that carries a faint copy of a finer one has SAC peaks at the fine
# spacing and its spectral peak at the coarse one (docs/analysis.md). Such units are
# left out of the clustering only when ModuleRule.max_period_mismatch asks for it.
PERIOD_MISMATCH = 0.2


@dataclass(frozen=True)
class ModuleRule:
    """Which grid units are clustered into modules and which groups count (SPEC §7.6
    leaves this open; our choice): grid units with spatial coherence >= min_coherence
    and a start share (start_share) <= max_start_share are clustered by period; a
    module counts when it holds min_fraction of them (at least 3). min_coherence 0,
    max_start_share 1 and min_fraction 0 give find_modules on every grid unit.
    max_period_mismatch (None: off, the default) also leaves out the grid units whose
    SAC and spectral periods differ by more than that relative amount."""

    min_fraction: float = MIN_MODULE_FRACTION
    min_coherence: float = MIN_COHERENCE
    max_start_share: float = MAX_START_SHARE
    max_period_mismatch: Optional[float] = None

    def __post_init__(self):
        if not 0 <= self.min_fraction < 1:
            raise ValueError(f"min module fraction (--min-module-fraction) must be in "
                             f"[0, 1), got {self.min_fraction}")
        if not 0 <= self.min_coherence <= 1:
            raise ValueError(f"min coherence (--min-coherence) must be in [0, 1], got "
                             f"{self.min_coherence}")
        if not 0 < self.max_start_share <= 1:
            raise ValueError(f"max start share (--max-start-share) must be in (0, 1], "
                             f"got {self.max_start_share}")
        m = self.max_period_mismatch
        if m is not None and not (m > 0 and np.isfinite(m)):
            raise ValueError(f"max period mismatch (--max-period-mismatch) must be a "
                             f"finite number > 0, got {m}")

    def coherent(self, coherence):
        """Units whose ratemap coherence passes (NaN fails)."""
        return np.nan_to_num(coherence, nan=-np.inf) >= self.min_coherence

    def settled(self, start):
        """Units not active mostly at the walks' start (NaN, a silent unit, passes)."""
        return np.nan_to_num(start, nan=0.0) <= self.max_start_share

    @property
    def period_tolerance(self):
        """The tolerance mismatches are counted at: the rule's, else PERIOD_MISMATCH."""
        m = self.max_period_mismatch
        return PERIOD_MISMATCH if m is None else m


def period_mismatch(period, spectral, tolerance=PERIOD_MISMATCH):
    """SPEC §7.5 cross-check: True where |spectral / SAC period - 1| > tolerance, or
    where either period is undefined (NaN)."""
    period, spectral = np.asarray(period, float), np.asarray(spectral, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = spectral / period
    return ~(np.abs(ratio - 1) <= tolerance)


@dataclass(frozen=True)
class WalkConfig:
    """SPEC §7.1: smooth random walks with reflecting walls (our generator, SPEC §9).

    Each walk starts at the arena centre (where the network sits at g_0), moves
    `speed` metres per step and turns by Normal(0, heading_noise) radians per step.
    A step that would leave the arena has its crossing component reversed (a mirror
    reflection), so the velocity fed to the network is always the true displacement.
    """

    n_walks: int = 200
    n_steps: int = 400
    speed: float = 0.06
    heading_noise: float = 0.4


def random_walks(rng, arena_size, walk=WalkConfig()):
    """SPEC §7.1: returns velocities and positions, both (n_walks, n_steps, 2)."""
    half = arena_size / 2
    pos = np.zeros((walk.n_walks, 2))
    heading = rng.uniform(-np.pi, np.pi, size=walk.n_walks)
    velocities = np.empty((walk.n_walks, walk.n_steps, 2))
    positions = np.empty_like(velocities)
    for t in range(walk.n_steps):
        heading = heading + rng.normal(0.0, walk.heading_noise, size=walk.n_walks)
        v = walk.speed * np.stack([np.cos(heading), np.sin(heading)], axis=1)
        outside = np.abs(pos + v) > half
        v = np.where(outside, -v, v)
        # keep heading consistent with the reflected step
        heading = np.arctan2(v[:, 1], v[:, 0])
        pos = pos + v
        velocities[:, t], positions[:, t] = v, pos
    return velocities, positions


def rollout_chunked(params, velocities, norm_eps, chunk=50, workers=1):
    """States (W, S, N) for long walks, a few walks at a time to bound memory.

    workers > 1 rolls the chunks out in that many threads (NumPy's matrix products,
    most of the time here, release the GIL). Each chunk is computed as it is with one
    worker and the chunks are joined in walk order, so the states are the same to the
    bit for any `workers`: it changes the wall time, not the result."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    starts = range(0, len(velocities), chunk)

    def part(i):
        return rollout(params, velocities[i:i + chunk], norm_eps)[1]

    if workers == 1 or len(starts) == 1:
        parts = [part(i) for i in starts]
    else:
        with ThreadPoolExecutor(max_workers=min(workers, len(starts))) as pool:
            parts = list(pool.map(part, starts))
    return np.concatenate(parts, axis=0)


def path_invariance_error(params, cfg, rng, n_bases=20):
    """SPEC §7.7: spread of final states of permuted trajectories (same end point),
    relative to the mean distance between final states of different base sequences."""
    finals = []
    for _ in range(n_bases):
        b = sample_batch(rng, cfg.data.batch_size, cfg.data.seq_len, cfg.data.vmax)
        finals.append(rollout(params, b.velocities, cfg.model.norm_eps)[1][:, -1])
    finals = np.stack(finals)  # (K, B, N)
    within = np.mean([_mean_pairwise_distance(f) for f in finals])
    between = _mean_pairwise_distance(finals[:, 0])
    return {"within": float(within), "between": float(between),
            "relative": float(within / between) if between > 0 else float("nan")}


def _pairwise_distances(points):
    """Euclidean distance matrix (M, M), through the Gram form of SPEC §4's dg2."""
    return np.sqrt(neural_sq_distances(points))


def _mean_pairwise_distance(points):
    d = _pairwise_distances(points)
    np.fill_diagonal(d, 0.0)
    n = len(points)
    return d.sum() / (n * (n - 1)) if n > 1 else 0.0


def distance_curve(states, positions, rng, n_points=2000, n_bins=20, max_dx=None):
    """SPEC §7.8: mean ||g_i - g_j|| per bin of ||x_i - x_j||, on a random subsample."""
    g = states.reshape(-1, states.shape[-1])
    x = positions.reshape(-1, 2)
    pick = rng.choice(len(g), size=min(n_points, len(g)), replace=False)
    g, x = g[pick], x[pick]
    dx = _pairwise_distances(x)
    dg = _pairwise_distances(g)
    iu = np.triu_indices(len(g), 1)
    dx, dg = dx[iu], dg[iu]
    edges = np.linspace(0, max_dx or dx.max(), n_bins + 1)
    which = np.clip(np.digitize(dx, edges) - 1, 0, n_bins - 1)
    counts = np.bincount(which, minlength=n_bins)
    sums = np.bincount(which, weights=dg, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    centres = (edges[:-1] + edges[1:]) / 2
    return {"spatial": centres.tolist(), "neural": [None if np.isnan(m) else float(m)
                                                    for m in mean]}


def start_share(states, start_steps=START_STEPS):
    """Share of each unit's activity, summed over walks, that falls in the first
    start_steps steps of the walks. states (W, S, N); returns (N,), NaN for a unit
    silent throughout. Walks must be longer than start_steps."""
    states = np.asarray(states, dtype=float)
    if states.ndim != 3 or states.shape[1] <= start_steps:
        raise ValueError(f"start_share needs states (walks, steps, units) with more than "
                         f"start_steps = {start_steps} steps, got shape {states.shape}")
    total = states.sum(axis=(0, 1))
    early = states[:, :start_steps].sum(axis=(0, 1))
    out = np.full(total.shape, np.nan)
    np.divide(early, total, out=out, where=total > 0)
    return out


def assign_modules(period_m, is_grid, coherence, min_ratio=1.2, rule=ModuleRule(),
                   start=None, spectral_m=None):
    """SPEC §7.6 with our rule (ModuleRule): module labels (-1: none) of every unit.

    start: each unit's start_share (None: every unit passes that test); spectral_m:
    each unit's spectral period (needed when rule.max_period_mismatch is set). Returns
    (labels, module periods, left-out groups as (periods, sizes), min_size, clustered)
    where clustered marks the grid units that passed the coherence, start and (when
    asked) period tests.
    Groups smaller than min_size are not counted; their units keep no module label."""
    clustered = is_grid & rule.coherent(coherence)
    if start is not None:
        clustered &= rule.settled(start)
    if rule.max_period_mismatch is not None:
        if spectral_m is None:
            raise ValueError("assign_modules: max_period_mismatch needs spectral_m")
        clustered &= ~period_mismatch(period_m, spectral_m, rule.max_period_mismatch)
    labels = np.full(len(is_grid), -1)
    min_size = module_min_size(int(clustered.sum()), rule.min_fraction)
    module_periods = np.array([])
    left_out = (np.array([]), np.array([], dtype=int))
    if clustered.any():
        labels[clustered], module_periods = find_modules(period_m[clustered],
                                                         min_ratio=min_ratio)
        labels, module_periods, left_out = drop_small_modules(labels, module_periods,
                                                              min_size)
    return labels, module_periods, left_out, min_size, clustered


def analyse_arena(params, cfg, arena_size, rng, nbins=32, walk=WalkConfig(),
                  threshold=GRID_THRESHOLD, min_ratio=1.2, modules=ModuleRule(),
                  workers=1):
    """SPEC §7.1-§7.6 in one arena. Returns (summary dict, arrays dict).

    Modules follow `modules` (a ModuleRule, see assign_modules): grid units with
    incoherent maps are not clustered (counted under modules.incoherent), and groups
    under the minimum size are listed under modules.left_out. workers: threads for the
    walks' rollout (rollout_chunked; the result does not depend on it)."""
    velocities, positions = random_walks(rng, arena_size, walk)
    states = rollout_chunked(params, velocities, cfg.model.norm_eps, workers=workers)
    maps = ratemaps(positions.reshape(-1, 2), states.reshape(-1, states.shape[-1]),
                    arena_size, nbins)
    scores = grid_scores(maps)
    bin_m = arena_size / nbins
    period_m = scores.period * bin_m
    is_grid = np.nan_to_num(scores.score60, nan=-np.inf) > threshold
    coherence = spatial_coherence(maps)
    start = start_share(states)
    spectral_m = spectral_period(maps) * bin_m
    reliability = (split_half_reliability(positions, states, arena_size, nbins)
                   if len(positions) >= 2 else np.full(states.shape[-1], np.nan))
    labels, module_periods, left_out, min_size, clustered = assign_modules(
        period_m, is_grid, coherence, min_ratio, modules, start, spectral_m)
    coherent = modules.coherent(coherence)
    mismatched = is_grid & period_mismatch(period_m, spectral_m, modules.period_tolerance)
    active = np.isfinite(scores.score60)
    reliable = np.nan_to_num(reliability, nan=-np.inf) >= RELIABILITY_THRESHOLD
    summary = {
        "arena_size": arena_size,
        "coverage": float(np.mean(np.isfinite(maps[0]))),
        "n_units": len(maps),
        "n_active": int(active.sum()),
        "grid_threshold": threshold,
        "grid_fraction": float(is_grid.mean()),
        "hexagonal_fraction": float(np.mean(is_grid & (scores.score60 > scores.score90))),
        "median_score60_active": _nanmedian(scores.score60[active]),
        "modules": {"periods": [float(p) for p in module_periods],
                    "ratios": [float(b / a) for a, b in
                               zip(module_periods[:-1], module_periods[1:])],
                    "sizes": [int(np.sum(labels == k)) for k in range(len(module_periods))],
                    "min_size": min_size,
                    "min_coherence": modules.min_coherence,
                    "incoherent": int(np.sum(is_grid & ~coherent)),
                    "max_start_share": modules.max_start_share,
                    "start_steps": START_STEPS,
                    "start_dominated": int(np.sum(is_grid & coherent
                                                  & ~modules.settled(start))),
                    "period_mismatch": {"tolerance": modules.period_tolerance,
                                        "grid_units": int(mismatched.sum()),
                                        "excluded": modules.max_period_mismatch
                                        is not None},
                    "left_out": {"periods": [float(p) for p in left_out[0]],
                                 "sizes": [int(n) for n in left_out[1]]},
                    # a reading beside the rule, not part of it: how many units of each
                    # module (and grid units in all) have a split-half reliable ratemap
                    "reliable": {"threshold": RELIABILITY_THRESHOLD,
                                 "grid_units": int(np.sum(is_grid & reliable)),
                                 "sizes": [int(np.sum((labels == k) & reliable))
                                           for k in range(len(module_periods))]}},
        "units": [_unit_record(i, scores, period_m, spectral_m, labels, coherence,
                               start, reliability) for i in range(len(maps))],
    }
    arrays = {"ratemaps": maps, "scores": scores, "period_m": period_m,
              "spectral_period_m": spectral_m, "labels": labels,
              "is_grid": is_grid, "coherence": coherence, "start_share": start,
              "reliability": reliability,
              "states": states, "positions": positions}
    return summary, arrays


def grid_check(params, cfg, arena_size=2.0, n_walks=100, seed=0, n_steps=400):
    """A quick gridness reading during training: (grid fraction, median score60 of
    active units) in one arena, from n_walks walks of n_steps steps drawn from their
    own seeded generator (the training data stream is not touched)."""
    walk = WalkConfig(n_walks=n_walks, n_steps=n_steps)
    summary, _ = analyse_arena(params, cfg, arena_size, np.random.default_rng(seed), walk=walk)
    return summary["grid_fraction"], summary["median_score60_active"]


def _nanmedian(a):
    return float(np.median(a)) if len(a) else float("nan")


def _unit_record(i, scores, period_m, spectral_m, labels, coherence, start,
                 reliability=None):
    def num(x):
        return None if not np.isfinite(x) else float(x)

    return {"unit": i, "score60": num(scores.score60[i]),
            "score60_mean": num(scores.score60_mean[i]), "score90": num(scores.score90[i]),
            "period_m": num(period_m[i]), "spectral_period_m": num(spectral_m[i]),
            "orientation": num(scores.orientation[i]),
            "coherence": num(coherence[i]), "start_share": num(start[i]),
            "reliability": None if reliability is None else num(reliability[i]),
            "module": int(labels[i])}


def arena_bins(arena_size, nbins=32, bin_size=None):
    """Bins per side: nbins, or arena_size / bin_size when a bin size (m) is given, so
    that larger arenas keep the resolution (and the SAC rings) of the smaller ones."""
    return nbins if bin_size is None else max(4, int(round(arena_size / bin_size)))


def evaluate(params, cfg, arenas=(1.0, 2.0, 3.0, 4.0), nbins=32, seed=0,
             walk=WalkConfig(), threshold=GRID_THRESHOLD, bin_size=None,
             modules=ModuleRule(), workers=1):
    """SPEC §7 for every arena; returns (summary, {arena: arrays}). workers: threads
    for the walks' rollouts (rollout_chunked; the result does not depend on it)."""
    rng = np.random.default_rng(seed)
    summary = {"seed": seed, "nbins": nbins, "bin_size": bin_size, "walk": walk.__dict__,
               "arenas": {}}
    arrays = {}
    for L in arenas:
        n = arena_bins(float(L), nbins, bin_size)
        s, a = analyse_arena(params, cfg, float(L), rng, n, walk, threshold,
                             modules=modules, workers=workers)
        s["nbins"] = n
        summary["arenas"][_arena_key(L)] = s
        arrays[float(L)] = a
    summary["path_invariance"] = path_invariance_error(params, cfg, rng)
    ref = arrays[2.0] if 2.0 in arrays else arrays[float(arenas[0])]
    summary["distance_curve"] = distance_curve(ref["states"], ref["positions"], rng)
    summary["generalisation"] = period_consistency(arrays)
    return summary, arrays


def _arena_key(L):
    return f"{float(L):g}m"


def period_consistency(arrays, reference=2.0, tolerance=0.10):
    """Fraction of the reference arena's grid units whose period stays within
    `tolerance` (relative) in each other arena (the generalisation check)."""
    if reference not in arrays:
        return {}
    ref = arrays[reference]
    grid = ref["is_grid"]
    out = {}
    for L, a in arrays.items():
        if L == reference or not grid.any():
            continue
        with np.errstate(invalid="ignore", divide="ignore"):
            rel = np.abs(a["period_m"][grid] / ref["period_m"][grid] - 1)
        out[_arena_key(L)] = float(np.mean(np.nan_to_num(rel, nan=np.inf) <= tolerance))
    return out


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@functools.lru_cache(maxsize=None)
def code_id():
    """sicref's version, a sha256 of its source files and NumPy's version: an evaluation
    written by other code is not reused (a fix in the analysis must show)."""
    from . import __version__

    here = os.path.dirname(os.path.abspath(__file__))
    h = hashlib.sha256()
    for name in sorted(os.listdir(here)):
        if name.endswith(".py"):
            h.update(name.encode() + b"\0")
            with open(os.path.join(here, name), "rb") as f:
                h.update(f.read())
    return f"{__version__} {h.hexdigest()[:16]} numpy {np.__version__}"


def _request(path, **settings):
    """What an evaluation or reading was asked: the checkpoint's bytes (sha256), the
    settings and the code (code_id), in the form JSON gives back (tuples as lists), so
    that a result written to disk can be matched against a new request."""
    request = {"checkpoint_sha256": file_sha256(path), "sicref": code_id()}
    for k, v in settings.items():
        request[k] = asdict(v) if is_dataclass(v) else v
    return json.loads(json.dumps(request))


def _earlier_json(path, log, redo):
    """The JSON in `path`, written by an earlier call; None when there is none, or when
    it cannot be read (said in the log: then `redo` happens)."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log(f"{path} is unreadable ({e}); {redo}")
        return None


def _earlier_summary(out, request, log):
    """out/summary.json when it answers `request` and its figures are all there."""
    summary = _earlier_json(os.path.join(out, "summary.json"), log, "evaluating again")
    if not isinstance(summary, dict) or summary.get("request") != request:
        return None
    figures = summary.get("figures")
    if not isinstance(figures, list) or not all(
            isinstance(f, str) and os.path.exists(os.path.join(out, f)) for f in figures):
        return None
    return summary


def evaluate_run(source, out, arenas=(1.0, 2.0, 3.0, 4.0), nbins=32, seed=0,
                 overwrite=False, walk=WalkConfig(), log=print, bin_size=None,
                 modules=ModuleRule(), reuse=False, workers=1):
    """Evaluate a run directory or checkpoint; write the figures, then summary.json, to
    out. reuse: when out/summary.json already answers the same request (the same
    checkpoint bytes, settings and sicref code, code_id; its figures there), return it
    without evaluating again (a continued `sicref run`); implies overwrite. workers:
    threads for the walks' rollouts; not part of the request, since the result does not
    depend on it."""
    from . import plots

    path = resolve_checkpoint(source)
    state = load_checkpoint(path)  # a missing or corrupt checkpoint is refused first
    request = _request(path, arenas=list(arenas), nbins=nbins, seed=seed, walk=walk,
                       bin_size=bin_size, modules=modules)
    if reuse:
        earlier = _earlier_summary(out, request, log)
        if earlier is not None:
            log(f"evaluation of {path} (step {earlier['step']}) already in "
                f"{os.path.join(out, 'summary.json')}; not evaluated again")
            for line in headline(earlier):
                log(line)
            return earlier
        overwrite = True
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise ValueError(f"output directory {out} is not empty; pass --overwrite to "
                         f"replace its files")
    os.makedirs(out, exist_ok=True)
    cfg = state["config"]
    log(f"evaluating {path} (step {state['step']}) in arenas {list(arenas)} m")
    summary, arrays = evaluate(state["params"], cfg, arenas, nbins, seed, walk,
                               bin_size=bin_size, modules=modules, workers=workers)
    summary["checkpoint"] = os.path.abspath(path)
    summary["step"] = state["step"]
    metrics = _metrics_path(path)
    figures = plots.evaluation_figures(summary, arrays, out, metrics)
    summary["figures"] = figures
    summary["request"] = request
    # written last: a summary.json beside its figures means the evaluation finished
    atomic_write_text(os.path.join(out, "summary.json"), json.dumps(summary, indent=1))
    for line in headline(summary):
        log(line)
    log(f"figures: {', '.join(os.path.join(out, f) for f in figures)}")
    return summary


def checkpoint_steps(run_dir):
    """Steps of the run's step_<k>.npz checkpoints, ascending."""
    names = os.listdir(os.path.join(run_dir, "checkpoints"))
    return sorted(int(n[5:-4]) for n in names if n.startswith("step_") and n.endswith(".npz"))


def checkpoint_reading(path, arena_size=2.0, nbins=32, seed=0,
                       walk=WalkConfig(n_walks=100), modules=ModuleRule(), earlier=(),
                       workers=1):
    """Grid fraction, modules and median score60 of one checkpoint (a row of
    gridness_over_training). The walks are drawn from `seed` afresh for every
    checkpoint, so a checkpoint reads the same whenever it is read. earlier: rows read
    before (over_training.json); one with the same request (checkpoint bytes, settings,
    sicref code) is returned as it is, not read again. workers: threads for the rollout
    (not part of the request; the reading does not depend on it)."""
    state = load_checkpoint(path)  # a missing or corrupt checkpoint is refused first
    request = _request(path, arena=arena_size, nbins=nbins, seed=seed, walk=walk,
                       modules=modules)
    for row in earlier:
        if isinstance(row, dict) and row.get("request") == request:
            return row
    s, _ = analyse_arena(state["params"], state["config"], arena_size,
                         np.random.default_rng(seed), nbins, walk, modules=modules,
                         workers=workers)
    return {"step": state["step"], "walk": dict(walk.__dict__),
            "grid_fraction": s["grid_fraction"],
            "hexagonal_fraction": s["hexagonal_fraction"],
            "median_score60_active": s["median_score60_active"],
            "n_active": s["n_active"], "modules": s["modules"], "request": request}


def earlier_readings(out, log=print):
    """The rows of out/over_training.json, for checkpoint_reading(earlier=); [] when
    there is none or it cannot be read (then every checkpoint is read again)."""
    rows = _earlier_json(os.path.join(out, "over_training.json"), log,
                         "reading every checkpoint again")
    return rows if isinstance(rows, list) else []


def reading_line(row, earlier=()):
    """A checkpoint reading in one line; "(read before)" when it is one of `earlier`'s
    rows, reused by checkpoint_reading."""
    return (f"step {row['step']}: grid {row['grid_fraction']:.0%}, hexagonal "
            f"{row['hexagonal_fraction']:.0%}, median score60 "
            f"{row['median_score60_active']:.2f}, modules {row['modules']['periods']}"
            + (" (read before)" if any(row is r for r in earlier) else ""))


def gridness_over_training(run_dir, arena_size=2.0, nbins=32, seed=0,
                           walk=WalkConfig(n_walks=100), log=print,
                           modules=ModuleRule(), earlier=(), workers=1):
    """Grid fraction, modules and median score60 of every checkpoint of a run (SPEC §10:
    gridness is not monotonic in training, so watch it over checkpoints). earlier:
    rows read before, reused where they answer the same request (checkpoint_reading)."""
    rows = []
    for step in checkpoint_steps(run_dir):
        rows.append(checkpoint_reading(
            os.path.join(run_dir, "checkpoints", f"step_{step}.npz"), arena_size, nbins,
            seed, walk, modules, earlier, workers))
        log(reading_line(rows[-1], earlier))
    return rows


def save_over_training(rows, out, arena_size=2.0):
    """Checkpoint readings as out/over_training.json and out/over_training.png."""
    from .plots import over_training_plot

    atomic_write_text(os.path.join(out, "over_training.json"), json.dumps(rows, indent=1))
    over_training_plot(rows, arena_size, out, "over_training.png")


def write_over_training(run_dir, out, arena_size=2.0, nbins=32, seed=0, log=print,
                        modules=ModuleRule(), walk=WalkConfig(n_walks=100), reuse=False,
                        workers=1):
    """gridness_over_training, saved as over_training.json and over_training.png.
    reuse: keep the rows of an earlier out/over_training.json that answer the same
    request (a continued `sicref run`)."""
    earlier = earlier_readings(out, log) if reuse else ()
    rows = gridness_over_training(run_dir, arena_size, nbins, seed, walk, log=log,
                                  modules=modules, earlier=earlier, workers=workers)
    save_over_training(rows, out, arena_size)
    return rows


def _metrics_path(ckpt_path):
    run_dir = os.path.dirname(os.path.dirname(os.path.abspath(ckpt_path)))
    p = os.path.join(run_dir, "metrics.jsonl")
    return p if os.path.exists(p) else None


def headline(summary):
    lines = []
    for key, s in summary["arenas"].items():
        m = s["modules"]
        periods = ", ".join(f"{p:.2f}" for p in m["periods"]) or "none"
        small = m.get("left_out", {"periods": []})
        note = ""
        if small["periods"]:
            groups = ", ".join(f"{p:.2f} ({n})" for p, n in
                               zip(small["periods"], small["sizes"]))
            note = (f"; groups under {m['min_size']} units not counted: m (units) "
                    f"{groups}")
        if m.get("incoherent"):
            note += (f"; {m['incoherent']} grid unit(s) with spatial coherence under "
                     f"{m['min_coherence']} not clustered")
        if m.get("start_dominated"):
            note += (f"; {m['start_dominated']} grid unit(s) active mostly in the walks' "
                     f"first {m['start_steps']} steps not clustered")
        mismatch = m.get("period_mismatch", {})
        if mismatch.get("grid_units"):
            note += (f"; {mismatch['grid_units']} grid unit(s) whose SAC and spectral "
                     f"periods differ by more than {mismatch['tolerance']:.0%}"
                     + (" not clustered" if mismatch["excluded"] else ""))
        reliable = m.get("reliable")
        if reliable is not None:
            n_grid = int(round(s["grid_fraction"] * s["n_units"]))
            per_module = " + ".join(f"{r}/{n}" for r, n in zip(reliable["sizes"],
                                                                  m["sizes"]))
            note += (f"; split-half reliable (r >= {reliable['threshold']}): "
                     f"{reliable['grid_units']}/{n_grid} grid units"
                     + (f", {per_module} of the modules' units" if per_module else ""))
        lines.append(f"{key}: grid units {s['grid_fraction']:.0%} (score60 > "
                     f"{s['grid_threshold']}), hexagonal {s['hexagonal_fraction']:.0%}, "
                     f"modules {len(m['periods'])} (periods m: {periods}{note}), "
                     f"coverage {s['coverage']:.0%}")
    pi = summary["path_invariance"]["relative"]
    lines.append(f"path-invariance error (relative): {pi:.3f}")
    return lines


def add_evaluate_commands(sub):
    from .cli import add_threads_arg

    p = sub.add_parser("evaluate", help="gridness analysis of a trained network (SPEC §7)")
    p.add_argument("source", metavar="RUN_DIR|CKPT")
    p.add_argument("--arena", type=float, nargs="+", default=[1.0, 2.0, 3.0, 4.0],
                   help="arena sides in metres")
    p.add_argument("--nbins", type=int, default=32)
    p.add_argument("--bin-size", type=float, metavar="METRES",
                   help="bin side in metres instead of --nbins (same resolution in "
                        "every arena)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--walks", type=int, default=WalkConfig.n_walks, metavar="W",
                   help="evaluation walks per arena (SPEC §7.1); default %(default)s")
    p.add_argument("--walk-steps", type=int, default=WalkConfig.n_steps, metavar="S",
                   help="steps per walk; default %(default)s. Shorter walks test the "
                   "code over shorter stretches of path integration (docs/analysis.md)")
    p.add_argument("--over-training", action="store_true",
                   help="also score every checkpoint of RUN_DIR in the first arena "
                   "(half as many walks, of --walk-steps steps)")
    p.add_argument("--min-module-fraction", type=float, default=MIN_MODULE_FRACTION,
                   metavar="F", help="count a module only if it holds this fraction of "
                   "the grid units (and at least 3); default %(default)s, 0 counts "
                   "every group find_modules reports")
    p.add_argument("--min-coherence", type=float, default=MIN_COHERENCE, metavar="C",
                   help="cluster into modules only the grid units whose ratemap has at "
                   "least this spatial coherence; default %(default)s, 0 clusters every "
                   "grid unit")
    p.add_argument("--max-start-share", type=float, default=MAX_START_SHARE, metavar="S",
                   help="cluster into modules only the grid units with at most this "
                   f"share of their activity in the walks' first {START_STEPS} steps; "
                   "default %(default)s, 1 clusters every grid unit")
    p.add_argument("--max-period-mismatch", type=float, default=None, metavar="R",
                   help="cluster into modules only the grid units whose SAC period and "
                   "spectral period (SPEC §7.5) differ by at most this relative amount, "
                   "e.g. 0.2; default: off (the mismatches are reported either way)")
    p.add_argument("--workers", type=int, default=1, metavar="W",
                   help="threads that roll the walks out side by side; the result is the "
                   "same to the bit for any W. With --threads 1, W = the number of cores "
                   "is fastest; default %(default)s")
    add_threads_arg(p)
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args):
    if any(a <= 0 for a in args.arena):
        raise ValueError(f"--arena sizes must be > 0 metres, got {args.arena}")
    if args.nbins < 4:
        raise ValueError(f"--nbins must be >= 4, got {args.nbins}")
    if args.bin_size is not None and args.bin_size <= 0:
        raise ValueError(f"--bin-size must be > 0 metres, got {args.bin_size}")
    if args.walks < 2:
        raise ValueError(f"--walks must be >= 2, got {args.walks}")
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    if args.walk_steps <= START_STEPS:
        raise ValueError(f"--walk-steps must be > {START_STEPS} (the start-share window "
                         f"of the module rule), got {args.walk_steps}")
    modules = ModuleRule(args.min_module_fraction, args.min_coherence,
                         args.max_start_share, args.max_period_mismatch)  # checks ranges
    if args.over_training and not os.path.isdir(args.source):
        raise ValueError("--over-training needs a run directory, not a checkpoint")
    evaluate_run(args.source, args.out, tuple(args.arena), args.nbins, args.seed,
                 args.overwrite, bin_size=args.bin_size,
                 walk=WalkConfig(n_walks=args.walks, n_steps=args.walk_steps),
                 modules=modules, workers=args.workers)
    if args.over_training:
        write_over_training(args.source, args.out, args.arena[0], args.nbins, args.seed,
                            modules=modules, workers=args.workers,
                            walk=WalkConfig(n_walks=args.walks // 2,
                                            n_steps=args.walk_steps))
    return 0
