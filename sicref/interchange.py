"""SPEC §8: interchange files for cross-checking other implementations of SIC.

Three kinds of `.npz` file, each with a `meta` entry (a 0-d string array holding JSON
with "format" and "version": 1); every other entry is a float64 array:

- params (`sicref-params`, SPEC §8.1): `mlp/W{k}` (in, out), `mlp/b{k}` (out,), `g0_raw`;
- batch  (`sicref-batch`,  SPEC §8.2): `velocities` (B, T, 2), optional `positions`;
- result (`sicref-result`, SPEC §8.3): states, every loss term, and `grad/<name>`.

Readers refuse anything else with an `InterchangeError` naming the file, the key and
what was expected; writers are atomic. `sicref.crosscheck` produces and compares such
files; docs/crosscheck.md describes the formats for authors of other implementations.
"""

import dataclasses
import json
import os
import zipfile
import zlib

import numpy as np

from sicref.checkpoint import atomic_savez
from sicref.config import Config, ConfigError, LossConfig, validate

VERSION = 1
PARAMS_FORMAT = "sicref-params"
BATCH_FORMAT = "sicref-batch"
RESULT_FORMAT = "sicref-result"
FORMATS = (PARAMS_FORMAT, BATCH_FORMAT, RESULT_FORMAT)
LOSS_PARTS = ("separation", "invariance", "capacity", "conformal_isometry")
LOSS_META_KEYS = ("sigma_x", "sigma_g", "lambda_sep", "lambda_inv", "lambda_cap",
                  "lambda_coniso", "reduction")
_ZIP_MAGIC = b"PK\x03\x04"


class InterchangeError(ValueError):
    """A file or array that does not follow SPEC §8."""


# ---------------------------------------------------------------- npz containers

def write_npz(path, arrays, meta):
    """Write `arrays` and the JSON `meta` to `path` atomically (checkpoint.atomic_savez)."""
    atomic_savez(path, {"meta": np.array(json.dumps(meta, sort_keys=True)), **arrays})


def read_npz(path, formats=FORMATS):
    """Read a SPEC §8 file: returns (meta, arrays). Checks only the container and meta.

    Refused: a missing, non-zip, truncated or corrupt file, pickled entries, a missing
    or malformed `meta`, a `format` not in `formats`, a `version` other than 1.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise InterchangeError(f"{path}: cannot open ({e.strerror})") from e
    if head != _ZIP_MAGIC:
        raise InterchangeError(f"{path}: not an .npz archive (no zip header); "
                               f"expected a file written by numpy.savez")
    arrays = {}
    try:
        with np.load(path, allow_pickle=False) as z:
            for key in z.files:
                arrays[key] = _load_member(path, z, key)
    except InterchangeError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as e:
        raise InterchangeError(f"{path}: truncated or corrupt .npz archive ({e})") from e
    if "meta" not in arrays:
        raise InterchangeError(f"{path}: key 'meta': missing; expected a 0-d string array "
                               f"holding JSON with 'format' and 'version'")
    meta = _parse_meta(path, arrays.pop("meta"), formats)
    return meta, arrays


def _load_member(path, z, key):
    try:
        value = z[key]
    except ValueError as e:
        if "pickle" in str(e):
            raise InterchangeError(f"{path}: key '{key}': holds pickled Python objects; "
                                   f"expected a numeric array") from e
        raise
    if not isinstance(value, np.ndarray):
        raise InterchangeError(f"{path}: key '{key}': not a .npy member; expected an array")
    return value


def _parse_meta(path, raw, formats):
    if raw.ndim != 0 or raw.dtype.kind not in "US":
        raise InterchangeError(f"{path}: key 'meta': expected a 0-d string array, got "
                               f"dtype {raw.dtype} shape {raw.shape}")
    text = raw.item()
    try:
        meta = json.loads(text.decode() if isinstance(text, bytes) else text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InterchangeError(f"{path}: key 'meta': not valid JSON ({e})") from e
    if not isinstance(meta, dict):
        raise InterchangeError(f"{path}: key 'meta': expected a JSON object")
    if meta.get("format") not in formats:
        raise InterchangeError(f"{path}: meta 'format': expected "
                               f"{' or '.join(map(repr, formats))}, got {meta.get('format')!r}")
    if meta.get("version") != VERSION:
        raise InterchangeError(f"{path}: meta 'version': expected {VERSION}, "
                               f"got {meta.get('version')!r}")
    return meta


def _check_array(path, key, a, shape):
    """A real floating array of exactly `shape` with only finite values, as float64."""
    if a.dtype.kind != "f":
        raise InterchangeError(f"{path}: key '{key}': expected a floating-point array, "
                               f"got dtype {a.dtype}")
    if a.shape != tuple(shape):
        raise InterchangeError(f"{path}: key '{key}': expected shape {tuple(shape)}, "
                               f"got {a.shape}")
    bad = ~np.isfinite(a)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InterchangeError(f"{path}: key '{key}': {int(bad.sum())} non-finite "
                               f"value(s), first at index {where}; expected finite values")
    return a.astype(np.float64)


def _check_keys(path, found, expected, what):
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing:
        raise InterchangeError(f"{path}: missing {what} {missing}; expected exactly "
                               f"{sorted(expected)}")
    if extra:
        raise InterchangeError(f"{path}: unexpected {what} {extra}; expected exactly "
                               f"{sorted(expected)}")


# ---------------------------------------------------------------- params (SPEC §8.1)

def param_shapes(n_units, mlp_sizes):
    """SPEC §8.1: the name -> shape of every parameter, W{k} as (in, out)."""
    shapes = {"g0_raw": (n_units,)}
    for k, (n_in, n_out) in enumerate(zip(mlp_sizes[:-1], mlp_sizes[1:])):
        shapes[f"mlp/W{k}"] = (n_in, n_out)
        shapes[f"mlp/b{k}"] = (n_out,)
    return shapes


def params_meta(params, norm_eps):
    """The §8.1 meta of a parameter dict, read off the shapes of its W{k}."""
    n_layers = sum(1 for name in params if name.startswith("mlp/W"))
    shapes = [np.shape(params[f"mlp/W{k}"]) for k in range(n_layers)]
    sizes = [int(s[0]) for s in shapes] + [int(shapes[-1][1])]
    return {"format": PARAMS_FORMAT, "version": VERSION, "activation": "relu",
            "n_units": int(np.size(params["g0_raw"])), "mlp_sizes": sizes,
            "norm_eps": float(norm_eps)}


def check_params(params, meta, path="<params>"):
    """SPEC §8.1: validate names, shapes and values against the meta; returns float64 copies."""
    n = meta.get("n_units")
    sizes = meta.get("mlp_sizes")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise InterchangeError(f"{path}: meta 'n_units': expected a positive integer, got {n!r}")
    if (not isinstance(sizes, list) or len(sizes) < 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes)):
        raise InterchangeError(f"{path}: meta 'mlp_sizes': expected a list of at least two "
                               f"positive integers, got {sizes!r}")
    if sizes[0] != 2 or sizes[-1] != n * n:
        raise InterchangeError(f"{path}: meta 'mlp_sizes': expected [2, ..., n_units**2 = "
                               f"{n * n}], got {sizes}")
    if meta.get("activation") != "relu":
        raise InterchangeError(f"{path}: meta 'activation': expected 'relu', "
                               f"got {meta.get('activation')!r}")
    eps = meta.get("norm_eps")
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not 0 < eps < np.inf:
        raise InterchangeError(f"{path}: meta 'norm_eps': expected a positive number, got {eps!r}")
    shapes = param_shapes(n, sizes)
    _check_keys(path, params, shapes, "parameter(s)")
    return {name: _check_array(path, name, np.asarray(params[name]), shapes[name])
            for name in shapes}


def write_params(path, params, norm_eps=1e-8, **extra_meta):
    """Write a SPEC §8.1 params file; `extra_meta` (e.g. provenance) goes into meta."""
    try:
        meta = {**extra_meta, **params_meta(params, norm_eps)}
    except (KeyError, IndexError) as e:
        raise InterchangeError(f"{os.fspath(path)}: parameters {sorted(params)} are not "
                               f"mlp/W0.., mlp/b0.. (2-D W) and g0_raw (missing {e})") from e
    arrays = check_params({k: np.asarray(v) for k, v in params.items()}, meta, os.fspath(path))
    write_npz(path, arrays, meta)


def read_params(path):
    """Read and validate a SPEC §8.1 params file: returns (params, meta)."""
    meta, arrays = read_npz(path, (PARAMS_FORMAT,))
    return check_params(arrays, meta, os.fspath(path)), meta


# ---------------------------------------------------------------- batch (SPEC §8.2)

def loss_meta(loss_cfg):
    """The §8.2 loss settings of a LossConfig, as a JSON-ready dict."""
    return {key: getattr(loss_cfg, key) for key in LOSS_META_KEYS}


def loss_config_from_meta(loss, path="<batch>"):
    """SPEC §8.2: a LossConfig from batch-meta settings; absent ones take the paper values."""
    if loss is None:
        return LossConfig()
    if not isinstance(loss, dict):
        raise InterchangeError(f"{path}: meta 'loss': expected a JSON object, got {loss!r}")
    return _loss_config(LossConfig(), loss, LOSS_META_KEYS, f"{path}: meta 'loss'")


def _loss_config(base, changes, allowed, where):
    """`base` with `changes` applied, checked by the config validator."""
    unknown = sorted(set(changes) - set(allowed))
    if unknown:
        raise InterchangeError(f"{where}: unknown setting(s) {unknown}; expected some of "
                               f"{list(allowed)}")
    loss_cfg = dataclasses.replace(base, **changes)
    try:
        validate(Config(loss=loss_cfg))
    except ConfigError as e:
        raise InterchangeError(f"{where}: {e}") from e
    return loss_cfg


def write_batch(path, velocities, positions=None, loss_cfg=None, **extra_meta):
    """Write a SPEC §8.2 batch file; `loss_cfg` (a LossConfig) goes into meta["loss"]."""
    meta = {**extra_meta, "format": BATCH_FORMAT, "version": VERSION}
    if loss_cfg is not None:
        meta["loss"] = loss_meta(loss_cfg)
    arrays = {"velocities": np.asarray(velocities)}
    if positions is not None:
        arrays["positions"] = np.asarray(positions)
    velocities, positions, _ = check_batch(arrays, meta, os.fspath(path))
    write_npz(path, {"velocities": velocities, "positions": positions}, meta)


def check_batch(arrays, meta, path="<batch>"):
    """SPEC §8.2: validate a batch; returns (velocities, positions, LossConfig)."""
    if "velocities" not in arrays:
        raise InterchangeError(f"{path}: key 'velocities': missing; expected (B, T, 2)")
    extra = sorted(set(arrays) - {"velocities", "positions"})
    if extra:
        raise InterchangeError(f"{path}: unexpected array(s) {extra}; expected 'velocities' "
                               f"and optionally 'positions'")
    v = arrays["velocities"]
    if v.ndim != 3 or v.shape[2] != 2 or v.shape[0] < 1 or v.shape[1] < 1:
        raise InterchangeError(f"{path}: key 'velocities': expected shape (B, T, 2) with "
                               f"B, T >= 1, got {v.shape}")
    v = _check_array(path, "velocities", v, v.shape)
    if "positions" in arrays:
        x = _check_array(path, "positions", arrays["positions"], v.shape)
    else:
        x = np.cumsum(v, axis=1)
    return v, x, loss_config_from_meta(meta.get("loss"), path)


def read_batch(path):
    """Read and validate a SPEC §8.2 file: returns (velocities, positions, loss_cfg, meta)."""
    meta, arrays = read_npz(path, (BATCH_FORMAT,))
    return (*check_batch(arrays, meta, os.fspath(path)), meta)


# ---------------------------------------------------------------- result (SPEC §8.3)

def result_shapes(n_units, mlp_sizes, batch_size, seq_len):
    """SPEC §8.3: the name -> shape of every entry of a result file."""
    shapes = {"initial_state": (n_units,), "hidden_states": (batch_size, seq_len, n_units)}
    shapes.update({f"loss/{part}": () for part in LOSS_PARTS + ("total",)})
    shapes.update({f"grad/{k}": s for k, s in param_shapes(n_units, mlp_sizes).items()})
    return shapes


def check_result(arrays, path="<result>"):
    """SPEC §8.3: validate a result; the sizes are read off its own arrays."""
    for key in ("hidden_states", "grad/g0_raw"):
        if key not in arrays:
            raise InterchangeError(f"{path}: key '{key}': missing")
    if arrays["hidden_states"].ndim != 3:
        raise InterchangeError(f"{path}: key 'hidden_states': expected shape (B, T, N), "
                               f"got {arrays['hidden_states'].shape}")
    batch_size, seq_len, n_units = arrays["hidden_states"].shape
    n_layers = sum(1 for k in arrays if k.startswith("grad/mlp/W"))
    hidden = [arrays.get(f"grad/mlp/W{k}", np.zeros(0)) for k in range(n_layers - 1)]
    sizes = [2] + [w.shape[-1] if w.ndim else -1 for w in hidden] + [n_units * n_units]
    shapes = result_shapes(n_units, sizes, batch_size, seq_len)
    _check_keys(path, arrays, shapes, "key(s)")
    return {k: _check_array(path, k, arrays[k], shapes[k]) for k in shapes}


def write_result(path, result, **extra_meta):
    """Write a SPEC §8.3 result file (a dict keyed as in result_shapes)."""
    arrays = check_result({k: np.asarray(v) for k, v in result.items()}, os.fspath(path))
    write_npz(path, arrays, {**extra_meta, "format": RESULT_FORMAT, "version": VERSION})


def read_result(path):
    """Read and validate a SPEC §8.3 result file: returns (result, meta)."""
    meta, arrays = read_npz(path, (RESULT_FORMAT,))
    return check_result(arrays, os.fspath(path)), meta
