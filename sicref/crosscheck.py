"""Cross-checking other implementations (SPEC §8): producing interchange files,
`crosscheck` (a reference result computed with autograd), `compare` (two files side
by side), and their commands. The file formats themselves are `sicref.interchange`.
"""

import fnmatch
import os
from typing import NamedTuple, Optional

import numpy as np
from autograd import value_and_grad

from sicref import __version__
from sicref.checkpoint import load_checkpoint, resolve_checkpoint
from sicref.cli import add_config_args, config_from_args
from sicref.config import DEFAULT_PRESET, preset as config_preset
from sicref.data import sample_batch
from sicref.interchange import (BATCH_FORMAT, LOSS_META_KEYS, LOSS_PARTS, VERSION,
                                InterchangeError, _loss_config, loss_meta, params_meta,
                                read_batch, read_npz, read_params, write_batch,
                                write_params, write_result)
from sicref.losses import sic_loss
from sicref.model import init_params, rollout

# ---------------------------------------------------------------- producing files

def _config(preset_or_config):
    return (config_preset(preset_or_config) if isinstance(preset_or_config, str)
            else preset_or_config)


def make_batch(cfg, seed=0, mode=None, out=None):
    """SPEC §2 batch as a §8.2 file: returns (velocities, positions, loss_cfg, meta).

    `cfg` is a Config or a preset name; `mode` ("permutation"/"identity") defaults to
    cfg.data.mode. The loss settings of cfg go into the meta. Written to `out` if given.
    """
    cfg = _config(cfg)
    mode = mode or cfg.data.mode
    batch = sample_batch(np.random.default_rng(seed), cfg.data.batch_size, cfg.data.seq_len,
                         vmax=cfg.data.vmax, mode=mode)
    provenance = {"seed": seed, "mode": mode, "vmax": cfg.data.vmax}
    if out is not None:
        write_batch(out, batch.velocities, batch.positions, cfg.loss, **provenance)
    meta = {**provenance, "format": BATCH_FORMAT, "version": VERSION, "loss": loss_meta(cfg.loss)}
    return batch.velocities, batch.positions, cfg.loss, meta


def init_params_file(preset=DEFAULT_PRESET, seed=0, out=None):
    """SPEC §3.3-§3.4 fresh parameters as a §8.1 file: returns (params, meta)."""
    cfg = _config(preset)
    params = init_params(np.random.default_rng(seed), cfg.model.n_units, cfg.model.hidden,
                         cfg.model.n_layers)
    if out is not None:
        write_params(out, params, cfg.model.norm_eps, seed=seed)
    return params, params_meta(params, cfg.model.norm_eps)


def export_params(source, out):
    """Write the parameters of a run directory or checkpoint as a §8.1 file: returns meta."""
    path = resolve_checkpoint(source)
    ckpt = load_checkpoint(path)
    provenance = {"source": os.path.abspath(path), "step": int(ckpt["step"])}
    write_params(out, ckpt["params"], ckpt["config"].model.norm_eps, **provenance)
    return {**provenance, **params_meta(ckpt["params"], ckpt["config"].model.norm_eps)}


def crosscheck(params_path, batch_path, out=None, overrides=None):
    """SPEC §8.3: the reference result for a params and a batch file, in float64.

    Loss settings come from the batch meta, else the paper values; `overrides` (a dict of
    LossConfig fields, None entries ignored; "method" picks the reference or the
    memory-bounded pair terms) wins over both. Gradients are autograd's.
    """
    params, pmeta = read_params(params_path)
    velocities, positions, loss_cfg, _ = read_batch(batch_path)
    changes = {k: v for k, v in (overrides or {}).items() if v is not None}
    loss_cfg = _loss_config(loss_cfg, changes, LOSS_META_KEYS + ("method",), "overrides")
    eps = pmeta["norm_eps"]

    def forward(p):
        g0, states = rollout(p, velocities, norm_eps=eps)
        total, parts = sic_loss(states, positions, loss_cfg, velocities=velocities,
                                initial_state=g0)
        return total, (g0, states, parts)

    total, grads = value_and_grad(lambda p: forward(p)[0])(params)
    _, (g0, states, parts) = forward(params)
    result = {"initial_state": g0, "hidden_states": states, "loss/total": total}
    result.update({f"loss/{part}": parts[part] for part in LOSS_PARTS})
    result.update({f"grad/{name}": grads[name] for name in params})
    result = {k: np.asarray(v, dtype=np.float64) for k, v in result.items()}
    if out is not None:
        write_result(out, result, producer=f"sicref {__version__} (numpy + autograd)",
                     dtype="float64", loss=loss_meta(loss_cfg), method=loss_cfg.method)
    return result


# ---------------------------------------------------------------- comparing files

class KeyComparison(NamedTuple):
    """One row of a comparison; errors are NaN where the key could not be compared."""
    key: str
    shape_a: Optional[tuple]
    shape_b: Optional[tuple]
    max_abs_err: float
    max_rel_err: float
    passed: bool
    note: str


class Comparison(NamedTuple):
    path_a: str
    path_b: str
    rtol: float
    atol: float
    rows: list

    @property
    def passed(self):
        return all(row.passed for row in self.rows)


def compare(a, b, rtol=1e-9, atol=0.0, keys=None):
    """Compare two SPEC §8 files of the same format, key by key.

    Per key: max_abs_err = max |a - b|; max_rel_err = max_abs_err / scale with
    scale = max(max |a|, max |b|) (relative to the key's own magnitude, so entries near
    zero do not dominate); pass iff max_abs_err <= atol + rtol * scale. Missing keys,
    shape mismatches and non-finite values fail and are reported, never raised.
    `keys` are glob patterns (e.g. "grad/*"); default every key of either file.
    Unusable files (InterchangeError) raise.
    """
    meta_a, arrays_a = read_npz(a)
    meta_b, arrays_b = read_npz(b)
    if meta_a["format"] != meta_b["format"]:
        raise InterchangeError(f"{os.fspath(b)}: format {meta_b['format']!r} differs from "
                               f"{meta_a['format']!r} of {os.fspath(a)}")
    names = sorted(set(arrays_a) | set(arrays_b))
    rows, seen = [], set()
    for pattern in keys or ["*"]:
        matched = [k for k in names if fnmatch.fnmatchcase(k, pattern)]
        if not matched:
            rows.append(KeyComparison(pattern, None, None, np.nan, np.nan, False,
                                      "no such key in either file"))
        for k in matched:
            if k not in seen:
                seen.add(k)
                rows.append(_compare_key(k, arrays_a.get(k), arrays_b.get(k), rtol, atol))
    return Comparison(os.fspath(a), os.fspath(b), rtol, atol, rows)


def _compare_key(key, a, b, rtol, atol):
    shape_a = None if a is None else a.shape
    shape_b = None if b is None else b.shape

    def fail(note):
        return KeyComparison(key, shape_a, shape_b, np.nan, np.nan, False, note)

    if a is None or b is None:
        return fail("missing in " + ("A" if a is None else "B"))
    if a.shape != b.shape:
        return fail("shape mismatch")
    if a.dtype.kind not in "biuf" or b.dtype.kind not in "biuf":
        return fail("not a real numeric array")
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return fail("non-finite values")
    if a.size == 0:
        return KeyComparison(key, shape_a, shape_b, 0.0, 0.0, True, "")
    abs_err = float(np.max(np.abs(a - b)))
    scale = float(max(np.max(np.abs(a)), np.max(np.abs(b))))
    rel_err = abs_err / scale if scale > 0 else 0.0
    return KeyComparison(key, shape_a, shape_b, abs_err, rel_err,
                         abs_err <= atol + rtol * scale, "")


def format_comparison(report):
    """The comparison as a text table, one key per line."""
    shape = lambda s: "-" if s is None else str(s)
    lines = [f"A: {report.path_a}", f"B: {report.path_b}",
             f"pass iff max|A-B| <= atol + rtol * max(|A|, |B|); "
             f"rtol={report.rtol:g} atol={report.atol:g}", ""]
    width = max([len(row.key) for row in report.rows] + [3])
    lines.append(f"{'key':<{width}}  {'shape':<16}  {'max abs err':>11}  "
                 f"{'max rel err':>11}  result")
    for row in report.rows:
        shapes = shape(row.shape_a) if row.shape_a == row.shape_b else \
            f"{shape(row.shape_a)} vs {shape(row.shape_b)}"
        verdict = "pass" if row.passed else "FAIL" + (f" ({row.note})" if row.note else "")
        lines.append(f"{row.key:<{width}}  {shapes:<16}  {row.max_abs_err:11.3e}  "
                     f"{row.max_rel_err:11.3e}  {verdict}")
    n_pass = sum(row.passed for row in report.rows)
    lines.append(f"\n{n_pass} of {len(report.rows)} keys pass")
    return "\n".join(lines)


# ---------------------------------------------------------------- command line

def add_interchange_commands(subparsers):
    """Register make-batch, export-params, init-params, crosscheck and compare.

    Errors (unusable files, bad configs) reach sicref.cli.main, which reports them and
    exits with 2.
    """
    p = subparsers.add_parser("make-batch", help="write a SPEC §8.2 batch file")
    add_config_args(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mode", choices=("permutation", "identity"),
                   help="augmentation (default: the config's)")
    p.add_argument("--out", required=True, help="BATCH.npz to write")
    p.set_defaults(func=_cmd_make_batch)

    p = subparsers.add_parser("export-params", help="write a run's parameters (SPEC §8.1)")
    p.add_argument("source", help="run directory (uses checkpoints/latest.npz) or checkpoint")
    p.add_argument("--out", required=True, help="PARAMS.npz to write")
    p.set_defaults(func=_cmd_export_params)

    p = subparsers.add_parser("init-params", help="write fresh parameters (SPEC §8.1)")
    add_config_args(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="PARAMS.npz to write")
    p.set_defaults(func=_cmd_init_params)

    p = subparsers.add_parser("crosscheck", help="reference states, losses and gradients "
                                                 "(SPEC §8.3) for a params and a batch file")
    p.add_argument("params")
    p.add_argument("batch")
    p.add_argument("--out", required=True, help="RESULT.npz to write")
    for flag in LOSS_META_KEYS[:-1]:
        p.add_argument("--" + flag.replace("_", "-"), type=float, dest=flag,
                       help="override the batch's loss setting")
    p.add_argument("--reduction", choices=("mean", "sum"), help="override the batch's")
    p.add_argument("--method", choices=("reference", "fast"),
                   help="pair terms: reference (P x P, default) or fast (row blocks, less memory)")
    p.set_defaults(func=_cmd_crosscheck)

    p = subparsers.add_parser("compare", help="compare two SPEC §8 files key by key; exit 0 "
                                              "all pass, 1 some fail, 2 unusable files")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--rtol", type=float, default=1e-9, help="default 1e-9 (float64 vs float64)")
    p.add_argument("--atol", type=float, default=0.0)
    p.add_argument("--keys", nargs="+", help="glob patterns, e.g. 'loss/*' 'grad/*'")
    p.set_defaults(func=_cmd_compare)


def _cmd_make_batch(args):
    make_batch(config_from_args(args), args.seed, args.mode, args.out)
    print(f"wrote {args.out}")
    return 0


def _cmd_export_params(args):
    meta = export_params(args.source, args.out)
    print(f"wrote {args.out} (step {meta['step']}, n_units {meta['n_units']}, "
          f"mlp_sizes {meta['mlp_sizes']})")
    return 0


def _cmd_init_params(args):
    init_params_file(config_from_args(args), args.seed, args.out)
    print(f"wrote {args.out}")
    return 0


def _cmd_crosscheck(args):
    result = crosscheck(args.params, args.batch, args.out,
                        {key: getattr(args, key) for key in LOSS_META_KEYS + ("method",)})
    for part in LOSS_PARTS + ("total",):
        print(f"loss/{part:<19} {float(result['loss/' + part]): .17g}")
    print(f"wrote {args.out}")
    return 0


def _cmd_compare(args):
    report = compare(args.a, args.b, args.rtol, args.atol, args.keys)
    print(format_comparison(report))
    return 0 if report.passed else 1
