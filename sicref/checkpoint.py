"""Atomic files and training checkpoints.

A checkpoint is an .npz holding `params/<name>`, `opt/m/<name>`, `opt/v/<name>` and a
`meta` entry: a 0-d string array of JSON with format, version, step, the config, the
AdamW step count, the plateau state and the data RNG state.
"""

import io
import json
import os
import tempfile
import zipfile

import numpy as np

CHECKPOINT_FORMAT = "sicref-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says which file and why."""


def atomic_write_bytes(path, data):
    """Write data to path so that readers see the old file or the new one, never half."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        os.chmod(tmp, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text):
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_savez(path, arrays):
    """np.savez to memory, then an atomic write (no '.npz' suffix is appended)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def read_jsonl(path, partial_ok=False):
    """The records of a JSON-lines log (metrics.jsonl, gridness.jsonl); [] if absent.

    partial_ok: ignore a last line without its newline (a log being written, or one
    whose writer was stopped mid-line)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        lines = f.readlines()
    if partial_ok and lines and not lines[-1].endswith("\n"):
        lines = lines[:-1]
    return [json.loads(line) for line in lines if line.strip()]


def meta_array(meta):
    return np.array(json.dumps(meta))


def read_npz(path, what="file"):
    """Load every array of an .npz (no pickles); refuse unreadable files with a reason."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such {what}") from None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise CheckpointError(f"{path}: not a readable .npz {what} ({e})") from None


def read_meta(arrays, path, expected_format):
    if "meta" not in arrays:
        raise CheckpointError(f"{path}: missing 'meta' entry; expected a "
                              f"{expected_format!r} file")
    try:
        meta = json.loads(str(arrays["meta"][()]))
    except (json.JSONDecodeError, TypeError, IndexError) as e:
        raise CheckpointError(f"{path}: 'meta' is not a JSON string ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != expected_format:
        got = meta.get("format") if isinstance(meta, dict) else meta
        raise CheckpointError(f"{path}: meta.format is {got!r}, expected "
                              f"{expected_format!r}")
    return meta


def save_checkpoint(path, step, params, opt_state, plateau_state, rng_state, config,
                    schedule=None, blas_threads=None):
    """schedule: the annealing state (see initial_schedule and _read_schedule).
    blas_threads: the BLAS thread settings of the process that trained to this step
    (sicref.train.PROCESS_BLAS_THREADS), or None where not known."""
    from .config import config_to_dict

    arrays = {f"params/{k}": v for k, v in params.items()}
    arrays.update({f"opt/m/{k}": v for k, v in opt_state["m"].items()})
    arrays.update({f"opt/v/{k}": v for k, v in opt_state["v"].items()})
    arrays["meta"] = meta_array({
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "step": int(step),
        "adam_t": int(opt_state["t"]), "plateau": plateau_state, "rng_state": rng_state,
        "schedule": schedule or initial_schedule(), "config": config_to_dict(config),
        "blas_threads": blas_threads})
    atomic_savez(path, arrays)


def save_start_checkpoint(path, params, config, seed=0):
    """A step-0 checkpoint of given parameters (fresh AdamW moments and plateau state, the
    generator of `seed`): a network made outside training, for `sicref evaluate` and
    `sicref train --init-from`."""
    from .optim import adamw_init, plateau_init

    save_checkpoint(path, 0, params, adamw_init(params), plateau_init(config.optim.lr),
                    np.random.default_rng(seed).bit_generator.state, config)


def initial_schedule():
    return {"stage": 1, "switch_step": None, "confirmed": False, "gave_up_step": None,
            "confirmed_step": None}


def _read_schedule(meta, path):
    """The annealing state of a checkpoint. Stage 1 (before the switch) or 2 (after it,
    at switch_step); confirmed: a reading after the switch was at the threshold again;
    gave_up_step: where the run gave up (it ends there); confirmed_step: the reading
    that confirmed the lattice (null before, or in checkpoints written before the field
    existed). Checkpoints written before these fields existed read as not confirmed and
    not given up."""
    sched = meta.get("schedule", initial_schedule())
    if not isinstance(sched, dict):
        sched = {"stage": None}
    stage, switch = sched.get("stage"), sched.get("switch_step")
    confirmed, gave_up = sched.get("confirmed", False), sched.get("gave_up_step")
    step = meta.get("step")
    is_step = lambda k: type(k) is int and type(step) is int and 0 < k <= step
    ok = ((stage == 1 and switch is None and confirmed is False)
          or (stage == 2 and is_step(switch) and isinstance(confirmed, bool)))
    ok = ok and (gave_up is None or is_step(gave_up))
    confirmed_step = sched.get("confirmed_step")
    ok = ok and (confirmed_step is None or (confirmed is True and is_step(confirmed_step)
                                            and confirmed_step > switch))
    if not ok:
        raise CheckpointError(f"{path}: meta.schedule {sched!r} is not a valid annealing "
                              f"state (stage 1 with switch_step null and confirmed false, "
                              f"or stage 2 with 0 < switch_step <= step; gave_up_step "
                              f"null or 0 < gave_up_step <= step; confirmed_step null, "
                              f"or with confirmed true switch_step < confirmed_step <= "
                              f"step)")
    return {"stage": stage, "switch_step": switch, "confirmed": confirmed,
            "gave_up_step": gave_up, "confirmed_step": confirmed_step}


def resolve_checkpoint(path):
    """A checkpoint file, or a run directory meaning its checkpoints/latest.npz."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return os.path.join(path, "checkpoints", "latest.npz")
    return path


def load_checkpoint(path):
    """Load and check a checkpoint; returns a dict with params, opt_state, plateau,
    rng_state, step, config (a Config), blas_threads (None in checkpoints that predate
    it)."""
    from .config import ConfigError, config_from_dict
    from .model import mlp_sizes, param_names

    path = resolve_checkpoint(path)
    arrays = read_npz(path, "checkpoint")
    meta = read_meta(arrays, path, CHECKPOINT_FORMAT)
    if meta.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {meta.get('version')!r}, "
                              f"this sicref reads version {CHECKPOINT_VERSION}")
    try:
        config = config_from_dict(meta["config"])
    except (ConfigError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: stored config is invalid ({e})") from None
    m = config.model
    sizes = mlp_sizes(m.n_units, m.hidden, m.n_layers)
    expected = {f"mlp/W{k}": (a, b) for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))}
    expected.update({f"mlp/b{k}": (b,) for k, b in enumerate(sizes[1:])})
    expected["g0_raw"] = (m.n_units,)
    out = {"params": {}, "m": {}, "v": {}}
    for name in param_names(m.n_layers):
        for group, prefix in (("params", "params/"), ("m", "opt/m/"), ("v", "opt/v/")):
            key = prefix + name
            if key not in arrays:
                raise CheckpointError(f"{path}: missing array {key!r}")
            a = arrays[key]
            if a.shape != expected[name]:
                raise CheckpointError(f"{path}: {key!r} has shape {a.shape}, the stored "
                                      f"config needs {expected[name]}")
            if not np.all(np.isfinite(a)):
                raise CheckpointError(f"{path}: {key!r} contains NaN or inf")
            out[group][name] = a.astype(np.float64)
    return {"params": out["params"],
            "opt_state": {"t": int(meta["adam_t"]), "m": out["m"], "v": out["v"]},
            "plateau": meta["plateau"], "rng_state": meta["rng_state"],
            "schedule": _read_schedule(meta, path),
            "step": int(meta["step"]), "config": config,
            "blas_threads": meta.get("blas_threads")}
