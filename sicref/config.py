"""Configuration: one frozen dataclass tree, validated before any work (SPEC §6, §9).

Every choice the paper leaves open (SPEC §9) is written once, here, as a default.
"""

import dataclasses
import json
import math
from dataclasses import dataclass, field


class ConfigError(ValueError):
    """An invalid configuration value; the message names the field and its allowed range."""


@dataclass(frozen=True)
class DataConfig:
    """SPEC §2: one base sequence of T velocities, B permuted copies per batch."""

    batch_size: int = 130
    seq_len: int = 60
    vmax: float = 0.15  # velocity components ~ Uniform(-vmax, vmax) metres per step
    mode: str = "permutation"  # "permutation" or "identity" (the ablation of SPEC §2.4)
    # Not in the paper (an experiment, docs/experiments.md): a second trajectory length.
    # When > 0, the run's batches alternate between seq_len (even-numbered batches,
    # counting accumulated ones) and seq_len_alt (odd); with optim.accumulation = 2 every
    # step averages the gradients of one batch of each length. 0 = off (SPEC §2).
    seq_len_alt: int = 0


@dataclass(frozen=True)
class ModelConfig:
    """SPEC §3: velocity-modulated RNN with an MLP 2 -> H -> ... -> N*N."""

    n_units: int = 128
    hidden: int = 256  # H, not given in the paper (SPEC §9)
    n_layers: int = 3
    norm_eps: float = 1e-8


@dataclass(frozen=True)
class LossConfig:
    """SPEC §4: separation, invariance, capacity, conformal isometry."""

    sigma_x: float = 0.05
    sigma_g: float = 0.4
    lambda_sep: float = 1.0
    lambda_inv: float = 0.1
    lambda_cap: float = 0.5
    lambda_coniso: float = 0.0
    reduction: str = "mean"  # "mean" or "sum"
    method: str = "fast"  # how pairwise terms are computed; results agree


@dataclass(frozen=True)
class OptimConfig:
    """SPEC §5: AdamW, global-norm clipping, accumulation, ReduceLROnPlateau."""

    lr: float = 2e-5
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    clip_norm: float = 0.1  # 0 disables clipping
    accumulation: int = 2
    # ReduceLROnPlateau (SPEC §9: factor and patience are ours). The total loss is
    # averaged over windows of `plateau_window` steps; after `plateau_patience`
    # windows without a relative improvement of `plateau_threshold`, lr *= factor.
    plateau_factor: float = 0.5
    plateau_patience: int = 10
    plateau_window: int = 1000
    plateau_threshold: float = 1e-4
    min_lr: float = 1e-7
    # Optional exponential decay on top of the plateau schedule (ours, not the paper's):
    # lr(step) = plateau lr * 0.5 ** (step / lr_half_life); 0 turns it off.
    lr_half_life: int = 0
    # Optional one-time drop (ours): from step lr_drop_step on, lr *= lr_drop_factor.
    # 0 turns it off (docs/experiments.md has what it did at small scale).
    lr_drop_step: int = 0
    lr_drop_factor: float = 0.1
    # Optional gridness-gated annealing (ours; docs/experiments.md has why). Every
    # anneal_check_every steps the run scores its own ratemaps in a 2 m arena
    # (anneal_walks random walks of anneal_walk_steps steps, SPEC §7). The first time the
    # fraction of units with score60 > 0.3 reaches anneal_grid_fraction, AdamW restarts
    # from zero moments at lr = anneal_lr, and the run ends anneal_steps later (or at
    # train.steps, if that comes first). After the switch the lr halves every
    # anneal_half_life steps (0: it stays at anneal_lr) and the readings go on, for the
    # record. anneal_lr = 0 turns annealing off. anneal_check_from: the first step with a
    # reading (readings before it are skipped; 0: from the start). Two ways for a run to
    # give up early (0 turns each off): no switch by step anneal_give_up (a multiple of
    # anneal_check_every), or none of the anneal_confirm readings after the switch at the
    # threshold again (a lattice that came and went). A run that gave up ends there;
    # `sicref run` then tries another initialisation. anneal_end_at_confirm: end the run
    # at the reading that confirms the lattice instead of anneal_steps after the switch
    # (needs anneal_confirm > 0), for a run whose later steps nobody uses (the main job's
    # redrawn tries, which are rescaled from their confirming checkpoint).
    anneal_lr: float = 0.0
    anneal_grid_fraction: float = 0.15
    anneal_check_every: int = 500
    anneal_steps: int = 4000
    anneal_walks: int = 100
    anneal_walk_steps: int = 400
    anneal_half_life: int = 0
    anneal_give_up: int = 0
    anneal_confirm: int = 0
    anneal_check_from: int = 0
    anneal_end_at_confirm: bool = False


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2_000_000
    seed: int = 0
    log_every: int = 100
    checkpoint_every: int = 10_000


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


_SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "loss": LossConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
}


def _preset_paper():
    """SPEC §6 exactly."""
    return Config()


def _preset_small():
    """Trains on 2 CPU cores; settings from the small-scale observations of SPEC §10."""
    return Config(
        data=DataConfig(batch_size=32, seq_len=20),
        model=ModelConfig(n_units=64, hidden=128),
        optim=OptimConfig(lr=1e-3, clip_norm=1.0, accumulation=1, plateau_window=500,
                          plateau_patience=4),
        train=TrainConfig(steps=2000, log_every=50, checkpoint_every=500),
    )


def _preset_laptop():
    """The default: grid cells on a 2-core CPU in minutes (docs/experiments.md).

    SPEC §10's small setting with shorter trajectories (T = 15), which learn faster at
    this size, sigma_g = 0.5, lambda_cap = 0.5 (the paper's) and the memory-bounded pair
    terms. At lr 1e-3 a hexagonal lattice appears (in some initialisations, between 2.5k
    and 4.5k steps) only for a few hundred steps. The annealing gate scores the network
    every 500 steps from step 2500 and, once 15 % of the units are grid units, restarts
    AdamW at lr 1e-4, halving every 1000 steps, for 3000 more steps, which keeps the
    lattice. A run gives up when the gate has not opened by step 4500 (every opening
    seen in docs/experiments.md came between 2500 and 4500), or when neither of the two
    readings after the switch reaches 15 % again; `sicref run` then tries another
    initialisation (sicref.tries). train.steps = 7500 = 4500 + 3000 is the longest run.
    Readings start at 2500 rather than 4000 because some lattices form and shear away
    before 4000 (docs/experiments.md section 4); caught that early they keep more units.
    Each reading uses 400 walks of 100 steps (the evaluation's walks are 400 steps):
    over long walks a network's small drift smears and shears a lattice's ratemaps, so
    400-step readings of one lattice flicker between 0 and 60 % and missed lattices that
    100-step readings see (docs/experiments.md section 4, "Shorter walks for the gate").
    lambda_cap 0.5 rather than 0.25: the paper's value; 11 of 55 initialisations caught
    a lattice against 5 of 34 (no clear difference), and both gave 4 of 5 main seeds
    (docs/results.md).
    examples/configs/laptop_constant_lr.json is the first version (sigma_g = 0.4,
    lambda_cap = 0.5, 4000 steps at a constant lr).
    """
    return Config(
        data=DataConfig(batch_size=32, seq_len=15),
        model=ModelConfig(n_units=128, hidden=128),
        loss=LossConfig(sigma_g=0.5, lambda_cap=0.5, method="fast"),
        optim=OptimConfig(lr=1e-3, clip_norm=1.0, accumulation=1, plateau_window=1000,
                          plateau_patience=5, anneal_lr=1e-4, anneal_grid_fraction=0.15,
                          anneal_check_every=500, anneal_steps=3000, anneal_walks=400,
                          anneal_walk_steps=100, anneal_half_life=1000,
                          anneal_check_from=2500,
                          anneal_give_up=4500, anneal_confirm=2),
        train=TrainConfig(steps=7500, log_every=100, checkpoint_every=500),
    )


def _preset_tiny():
    """For tests: a step takes milliseconds."""
    return Config(
        data=DataConfig(batch_size=4, seq_len=6),
        model=ModelConfig(n_units=8, hidden=16),
        loss=LossConfig(sigma_x=0.1),
        optim=OptimConfig(lr=1e-2, clip_norm=1.0, accumulation=1, plateau_window=10,
                          plateau_patience=2),
        train=TrainConfig(steps=20, log_every=5, checkpoint_every=10),
    )


PRESETS = {"paper": _preset_paper, "laptop": _preset_laptop, "small": _preset_small,
           "tiny": _preset_tiny}
DEFAULT_PRESET = "laptop"


def preset(name):
    """Return the named preset, validated."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return validate(PRESETS[name]())


def replace(cfg, **sections):
    """Return cfg with fields replaced, e.g. replace(cfg, train={"steps": 10})."""
    new = {}
    for name, changes in sections.items():
        if name not in _SECTIONS:
            raise ConfigError(f"unknown config section {name!r}; one of {sorted(_SECTIONS)}")
        new[name] = dataclasses.replace(getattr(cfg, name), **changes)
    return validate(dataclasses.replace(cfg, **new))


def config_to_dict(cfg):
    return dataclasses.asdict(cfg)


def config_from_dict(d):
    """Build a Config from a (possibly partial) nested dict; unknown keys are errors."""
    if not isinstance(d, dict):
        raise ConfigError("config must be a JSON object with sections "
                          f"{sorted(_SECTIONS)}")
    unknown = set(d) - set(_SECTIONS)
    if unknown:
        raise ConfigError(f"unknown config section(s) {sorted(unknown)}; "
                          f"allowed: {sorted(_SECTIONS)}")
    sections = {}
    for name, cls in _SECTIONS.items():
        values = d.get(name, {})
        if not isinstance(values, dict):
            raise ConfigError(f"config section {name!r} must be an object")
        allowed = {f.name for f in dataclasses.fields(cls)}
        extra = set(values) - allowed
        if extra:
            raise ConfigError(f"unknown field(s) {sorted(f'{name}.{e}' for e in extra)}; "
                              f"allowed in {name!r}: {sorted(allowed)}")
        sections[name] = cls(**values)
    return validate(Config(**sections))


def save_config(cfg, path):
    from .checkpoint import atomic_write_text

    atomic_write_text(path, json.dumps(config_to_dict(cfg), indent=2) + "\n")


def load_config(path):
    try:
        with open(path) as f:
            d = json.load(f)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    return config_from_dict(d)


# -- validation --------------------------------------------------------------------------

def _check_type(name, value, kind):
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = ok and math.isfinite(value)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise ConfigError(f"{name} must be a finite {kind.__name__}, got {value!r}")


def _check_range(name, value, kind, lo=None, hi=None, lo_open=False, hi_open=False):
    _check_type(name, value, kind)
    bad = ((lo is not None and (value <= lo if lo_open else value < lo))
           or (hi is not None and (value >= hi if hi_open else value > hi)))
    if bad:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        lo_s = "-inf" if lo is None else lo
        hi_s = "inf" if hi is None else hi
        raise ConfigError(f"{name} = {value!r} is outside the allowed range "
                          f"{left}{lo_s}, {hi_s}{right}")


def _check_choice(name, value, choices):
    if value not in choices:
        raise ConfigError(f"{name} = {value!r}; allowed values: {list(choices)}")


def validate(cfg):
    """Check every field; return cfg unchanged or raise ConfigError naming the field."""
    d, m, lo, o, t = cfg.data, cfg.model, cfg.loss, cfg.optim, cfg.train
    _check_range("data.batch_size", d.batch_size, int, 1)
    _check_range("data.seq_len", d.seq_len, int, 1)
    _check_range("data.seq_len_alt", d.seq_len_alt, int, 0)
    _check_range("data.vmax", d.vmax, float, 0, lo_open=True)
    _check_choice("data.mode", d.mode, ("permutation", "identity"))
    _check_range("model.n_units", m.n_units, int, 1)
    _check_range("model.hidden", m.hidden, int, 1)
    _check_range("model.n_layers", m.n_layers, int, 1)
    _check_range("model.norm_eps", m.norm_eps, float, 0, lo_open=True)
    _check_range("loss.sigma_x", lo.sigma_x, float, 0, lo_open=True)
    _check_range("loss.sigma_g", lo.sigma_g, float, 0, lo_open=True)
    for name in ("lambda_sep", "lambda_inv", "lambda_cap", "lambda_coniso"):
        _check_range(f"loss.{name}", getattr(lo, name), float, 0)
    _check_choice("loss.reduction", lo.reduction, ("mean", "sum"))
    _check_choice("loss.method", lo.method, ("reference", "fast"))
    _check_range("optim.lr", o.lr, float, 0, lo_open=True)
    _check_range("optim.beta1", o.beta1, float, 0, 1, hi_open=True)
    _check_range("optim.beta2", o.beta2, float, 0, 1, hi_open=True)
    _check_range("optim.eps", o.eps, float, 0, lo_open=True)
    _check_range("optim.weight_decay", o.weight_decay, float, 0)
    _check_range("optim.clip_norm", o.clip_norm, float, 0)
    _check_range("optim.accumulation", o.accumulation, int, 1)
    _check_range("optim.plateau_factor", o.plateau_factor, float, 0, 1, True, False)
    _check_range("optim.plateau_patience", o.plateau_patience, int, 0)
    _check_range("optim.plateau_window", o.plateau_window, int, 1)
    _check_range("optim.plateau_threshold", o.plateau_threshold, float, 0)
    _check_range("optim.min_lr", o.min_lr, float, 0)
    _check_range("optim.lr_half_life", o.lr_half_life, int, 0)
    _check_range("optim.lr_drop_step", o.lr_drop_step, int, 0)
    _check_range("optim.lr_drop_factor", o.lr_drop_factor, float, 0, 1, True, False)
    _check_range("optim.anneal_lr", o.anneal_lr, float, 0)
    _check_range("optim.anneal_grid_fraction", o.anneal_grid_fraction, float, 0, 1, True)
    _check_range("optim.anneal_check_every", o.anneal_check_every, int, 1)
    _check_range("optim.anneal_steps", o.anneal_steps, int, 1)
    _check_range("optim.anneal_walks", o.anneal_walks, int, 1)
    _check_range("optim.anneal_walk_steps", o.anneal_walk_steps, int, 1)
    _check_range("optim.anneal_half_life", o.anneal_half_life, int, 0)
    _check_range("optim.anneal_give_up", o.anneal_give_up, int, 0)
    _check_range("optim.anneal_confirm", o.anneal_confirm, int, 0)
    _check_range("optim.anneal_check_from", o.anneal_check_from, int, 0)
    if o.anneal_give_up % o.anneal_check_every or (
            o.anneal_give_up and o.anneal_give_up < o.anneal_check_from):
        raise ConfigError(f"optim.anneal_give_up must be 0 or a multiple of "
                          f"optim.anneal_check_every ({o.anneal_check_every}) at or after "
                          f"optim.anneal_check_from ({o.anneal_check_from}), got "
                          f"{o.anneal_give_up}")
    _check_type("optim.anneal_end_at_confirm", o.anneal_end_at_confirm, bool)
    if o.anneal_end_at_confirm and not o.anneal_confirm:
        raise ConfigError("optim.anneal_end_at_confirm = true needs optim.anneal_confirm "
                          ">= 1 (the readings that can confirm a lattice), got 0")
    if o.anneal_lr > 0 and (o.lr_drop_step > 0 or o.lr_half_life > 0):
        raise ConfigError("optim.anneal_lr > 0 cannot be combined with optim.lr_drop_step "
                          "or optim.lr_half_life (set those to 0)")
    _check_range("train.steps", t.steps, int, 1)
    _check_range("train.seed", t.seed, int, 0)
    _check_range("train.log_every", t.log_every, int, 1)
    _check_range("train.checkpoint_every", t.checkpoint_every, int, 1)
    return cfg
