"""Interchange files, crosscheck and compare (SPEC §8).

The golden files in tests/data (tiny preset with lambda_coniso = 1, so every loss term
enters the total) are regression guards only: they pin today's numbers so that a change
shows up. Their correctness does not come from the files themselves but from the other
tests here: crosscheck's gradients against central finite differences, crosscheck
against the library called directly, and the independent PyTorch implementation in
examples/crosscheck_torch.py agreeing to 1e-9 in float64. They were written by

    cfg = replace(preset("tiny"), loss={"lambda_coniso": 1.0})
    init_params_file(cfg, seed=0, out="tests/data/tiny_params.npz")
    make_batch(cfg, seed=1, out="tests/data/tiny_batch.npz")
    crosscheck("tests/data/tiny_params.npz", "tests/data/tiny_batch.npz",
               "tests/data/tiny_result.npz")
"""

import importlib.util
import io
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from autograd import grad
from hypothesis import given, settings, strategies as st

from sicref.checkpoint import save_checkpoint
from sicref.cli import main as cli_main
from sicref.config import LossConfig, preset
from sicref.crosscheck import (compare, crosscheck, export_params, format_comparison,
                               init_params_file, make_batch)
from sicref.interchange import (InterchangeError, check_result, read_batch, read_npz,
                                read_params, read_result, write_batch, write_npz,
                                write_params, write_result)
from sicref.losses import sic_loss
from sicref.model import init_params, rollout

DATA = os.path.join(os.path.dirname(__file__), "data")
GOLDEN_PARAMS = os.path.join(DATA, "tiny_params.npz")
GOLDEN_BATCH = os.path.join(DATA, "tiny_batch.npz")
GOLDEN_RESULT = os.path.join(DATA, "tiny_result.npz")
EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "crosscheck_torch.py")


def tiny_params(seed=0, n_units=3, hidden=5):
    return init_params(np.random.default_rng(seed), n_units, hidden)


def tiny_files(tmp_path, loss=LossConfig(sigma_x=0.1, lambda_coniso=1.0)):
    """A params and a batch file of the tiny preset; the batch carries `loss`."""
    params_path, batch_path = tmp_path / "params.npz", tmp_path / "batch.npz"
    init_params_file("tiny", seed=3, out=params_path)
    v, x, _, _ = make_batch("tiny", seed=4)
    write_batch(batch_path, v, x, loss)
    return params_path, batch_path


def arrays_of(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def rewrite(src, dst, change=None, meta_change=None, raw_meta=None):
    """Copy an interchange file, editing its arrays and/or meta without validation."""
    arrays = arrays_of(src)
    meta = json.loads(str(arrays.pop("meta")[()]))
    if change:
        change(arrays)
    if meta_change:
        meta_change(meta)
    with open(dst, "wb") as f:
        np.savez(f, meta=raw_meta if raw_meta is not None else np.array(json.dumps(meta)),
                 **arrays)
    return dst


# ------------------------------------------------------------------ round trips

def test_params_round_trip_keeps_names_shapes_values_and_meta(tmp_path):
    params = tiny_params()
    write_params(tmp_path / "p.npz", params, norm_eps=1e-6, step=7)
    back, meta = read_params(tmp_path / "p.npz")
    assert sorted(back) == sorted(params)
    for name in params:
        assert back[name].dtype == np.float64
        np.testing.assert_array_equal(back[name], params[name])
    assert meta == {"format": "sicref-params", "version": 1, "n_units": 3,
                    "mlp_sizes": [2, 5, 5, 9], "activation": "relu", "norm_eps": 1e-6,
                    "step": 7}


@settings(max_examples=15, deadline=None)
@given(n_units=st.integers(1, 5), hidden=st.integers(1, 6), n_layers=st.integers(1, 4),
       seed=st.integers(0, 2 ** 32 - 1))
def test_params_round_trip_is_exact_for_any_network_size(tmp_path_factory, n_units, hidden,
                                                         n_layers, seed):
    params = init_params(np.random.default_rng(seed), n_units, hidden, n_layers)
    path = tmp_path_factory.mktemp("p") / "p.npz"
    write_params(path, params)
    back, meta = read_params(path)
    assert meta["mlp_sizes"] == [2] + [hidden] * (n_layers - 1) + [n_units ** 2]
    assert sorted(back) == sorted(params)
    assert all(np.array_equal(back[k], params[k]) for k in params)


def test_batch_round_trip_with_and_without_positions(tmp_path):
    v, x, _, _ = make_batch("tiny", seed=0)
    loss = LossConfig(sigma_x=0.2, reduction="sum", lambda_coniso=0.3)
    write_batch(tmp_path / "b.npz", v, x, loss)
    v2, x2, loss2, meta = read_batch(tmp_path / "b.npz")
    np.testing.assert_array_equal(v2, v)
    np.testing.assert_array_equal(x2, x)
    assert loss2 == loss
    assert meta["loss"]["reduction"] == "sum"
    # Without positions and loss settings: cumulative sum (SPEC §2.3) and paper values.
    write_npz(tmp_path / "v.npz", {"velocities": v}, {"format": "sicref-batch", "version": 1})
    v3, x3, loss3, _ = read_batch(tmp_path / "v.npz")
    np.testing.assert_array_equal(x3, np.cumsum(v, axis=1))
    assert loss3 == LossConfig()


def test_result_round_trip(tmp_path):
    result, _ = read_result(GOLDEN_RESULT)
    write_result(tmp_path / "r.npz", result, producer="test")
    back, meta = read_result(tmp_path / "r.npz")
    assert meta["producer"] == "test" and meta["format"] == "sicref-result"
    assert sorted(back) == sorted(result)
    for key in result:
        np.testing.assert_array_equal(back[key], result[key])


def test_make_batch_and_init_params_file_return_what_they_write(tmp_path):
    v, x, loss, meta = make_batch("tiny", seed=5, mode="identity", out=tmp_path / "b.npz")
    v2, x2, loss2, meta2 = read_batch(tmp_path / "b.npz")
    np.testing.assert_array_equal(v, v2)
    np.testing.assert_array_equal(x, x2)
    assert loss == loss2 == preset("tiny").loss and meta == meta2
    assert np.all(v == v[:1])  # identity mode: every trajectory is the base sequence
    params, pmeta = init_params_file("tiny", seed=5, out=tmp_path / "p.npz")
    params2, pmeta2 = read_params(tmp_path / "p.npz")
    assert all(np.array_equal(params[k], params2[k]) for k in params)
    assert pmeta2["mlp_sizes"] == pmeta["mlp_sizes"] == [2, 16, 16, 64]


def test_writes_are_atomic_and_add_no_suffix(tmp_path):
    out = tmp_path / "params.bin"
    write_params(out, tiny_params())
    before = out.read_bytes()
    bad = tiny_params()
    bad["mlp/W1"][0, 0] = np.nan
    with pytest.raises(InterchangeError):
        write_params(out, bad)
    assert out.read_bytes() == before  # the old file is untouched
    assert sorted(os.listdir(tmp_path)) == ["params.bin"]  # no temp file, no ".npz" added


# ------------------------------------------------------------------ crosscheck

def test_crosscheck_on_exported_params_equals_the_library(tmp_path):
    cfg = preset("tiny")
    params = tiny_params(seed=1, n_units=cfg.model.n_units, hidden=cfg.model.hidden)
    zeros = {k: np.zeros_like(v) for k, v in params.items()}
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    save_checkpoint(run / "checkpoints" / "latest.npz", 11, params,
                    {"t": 0, "m": zeros, "v": zeros}, {}, {}, cfg)
    meta = export_params(run, tmp_path / "p.npz")
    assert meta["step"] == 11
    _, batch_path = tiny_files(tmp_path)
    result = crosscheck(tmp_path / "p.npz", batch_path, tmp_path / "r.npz")

    v, x, loss_cfg, _ = read_batch(batch_path)

    def total(p):
        g0, states = rollout(p, v, cfg.model.norm_eps)
        return sic_loss(states, x, loss_cfg, velocities=v, initial_state=g0)[0]

    g0, states = rollout(params, v, cfg.model.norm_eps)
    value, parts = sic_loss(states, x, loss_cfg, velocities=v, initial_state=g0)
    grads = grad(total)(params)
    np.testing.assert_array_equal(result["initial_state"], g0)
    np.testing.assert_array_equal(result["hidden_states"], states)
    assert result["loss/total"] == value
    assert parts["conformal_isometry"] > 0
    for part, value in parts.items():
        assert result[f"loss/{part}"] == value
    for name in params:
        np.testing.assert_array_equal(result[f"grad/{name}"], grads[name])
    written, _ = read_result(tmp_path / "r.npz")
    assert all(np.array_equal(written[k], result[k]) for k in result)


def test_crosscheck_gradients_match_central_finite_differences(tmp_path):
    """d total / d theta along one random direction per parameter, through files only."""
    params_path, batch_path = tiny_files(tmp_path)
    result = crosscheck(params_path, batch_path)
    params, meta = read_params(params_path)
    rng = np.random.default_rng(0)
    h = 1e-6
    for name in params:
        direction = rng.normal(size=params[name].shape)
        totals = []
        for sign in (1, -1):
            moved = dict(params, **{name: params[name] + sign * h * direction})
            write_params(tmp_path / "moved.npz", moved, meta["norm_eps"])
            totals.append(float(crosscheck(tmp_path / "moved.npz", batch_path)["loss/total"]))
        numeric = (totals[0] - totals[1]) / (2 * h)
        analytic = float(np.sum(result[f"grad/{name}"] * direction))
        assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-8), name


def test_crosscheck_takes_loss_settings_from_batch_meta_then_overrides(tmp_path):
    params_path, batch_path = tiny_files(tmp_path, LossConfig(sigma_x=0.1, reduction="sum"))
    from_meta = crosscheck(params_path, batch_path)
    as_sum = crosscheck(params_path, batch_path, overrides={"reduction": "sum",
                                                            "sigma_x": None})
    as_mean = crosscheck(params_path, batch_path, overrides={"reduction": "mean"})
    assert from_meta["loss/invariance"] == as_sum["loss/invariance"]
    assert from_meta["loss/invariance"] > 10 * as_mean["loss/invariance"]
    weighted = crosscheck(params_path, batch_path, overrides={"lambda_cap": 2.0})
    assert weighted["loss/total"] == pytest.approx(
        from_meta["loss/total"] + 1.5 * from_meta["loss/capacity"])
    with pytest.raises(InterchangeError, match="sigma_x"):
        crosscheck(params_path, batch_path, overrides={"sigma_x": -1.0})


def test_crosscheck_fast_method_agrees_with_the_reference(tmp_path):
    pytest.importorskip("sicref.fastloss")
    params_path, batch_path = tiny_files(tmp_path)
    crosscheck(params_path, batch_path, tmp_path / "ref.npz")
    crosscheck(params_path, batch_path, tmp_path / "fast.npz", {"method": "fast"})
    assert read_result(tmp_path / "fast.npz")[1]["method"] == "fast"
    report = compare(tmp_path / "ref.npz", tmp_path / "fast.npz", rtol=1e-12)
    assert report.passed, format_comparison(report)


def test_golden_files_still_give_the_same_result(tmp_path):
    """Regression guard; see the module docstring for where correctness comes from."""
    crosscheck(GOLDEN_PARAMS, GOLDEN_BATCH, tmp_path / "now.npz")
    report = compare(GOLDEN_RESULT, tmp_path / "now.npz", rtol=1e-10)
    assert report.passed, format_comparison(report)
    assert len(report.rows) == 14


# ------------------------------------------------------------------ compare

def test_compare_passes_identical_files():
    report = compare(GOLDEN_RESULT, GOLDEN_RESULT, rtol=0.0)
    assert report.passed and all(row.max_abs_err == 0 for row in report.rows)


def test_compare_fails_on_one_perturbed_gradient_entry(tmp_path):
    def perturb(arrays):
        arrays["grad/mlp/W1"][2, 3] *= 1 + 1e-6

    b = rewrite(GOLDEN_RESULT, tmp_path / "b.npz", perturb)
    report = compare(GOLDEN_RESULT, b)
    failed = [row.key for row in report.rows if not row.passed]
    assert failed == ["grad/mlp/W1"] and not report.passed
    assert compare(GOLDEN_RESULT, b, rtol=1e-5).passed


def test_compare_reports_missing_keys_and_shape_mismatches(tmp_path):
    def damage(arrays):
        del arrays["loss/capacity"]
        arrays["hidden_states"] = arrays["hidden_states"][:, :-1]

    b = rewrite(GOLDEN_RESULT, tmp_path / "b.npz", damage)
    rows = {row.key: row for row in compare(GOLDEN_RESULT, b).rows}
    assert not rows["loss/capacity"].passed and rows["loss/capacity"].note == "missing in B"
    assert rows["hidden_states"].note == "shape mismatch"
    assert rows["hidden_states"].shape_b == (4, 5, 8)
    assert rows["loss/total"].passed
    table = format_comparison(compare(GOLDEN_RESULT, b))
    assert "FAIL (missing in B)" in table and "(4, 6, 8) vs (4, 5, 8)" in table


def test_compare_keys_are_glob_patterns_and_unmatched_ones_fail():
    report = compare(GOLDEN_RESULT, GOLDEN_RESULT, keys=["loss/*", "nothing/*"])
    assert [row.key for row in report.rows][:5] == [
        "loss/capacity", "loss/conformal_isometry", "loss/invariance", "loss/separation",
        "loss/total"]
    assert report.rows[-1].key == "nothing/*" and not report.rows[-1].passed


def test_compare_refuses_files_of_different_formats():
    with pytest.raises(InterchangeError, match="differs"):
        compare(GOLDEN_RESULT, GOLDEN_PARAMS)


def test_compare_command_exit_codes(tmp_path, capsys):
    def perturb(arrays):
        arrays["loss/total"] = arrays["loss/total"] + 1.0

    b = rewrite(GOLDEN_RESULT, tmp_path / "b.npz", perturb)
    assert cli_main(["compare", GOLDEN_RESULT, GOLDEN_RESULT]) == 0
    assert cli_main(["compare", GOLDEN_RESULT, str(b)]) == 1
    assert "FAIL" in capsys.readouterr().out
    (tmp_path / "junk.npz").write_text("not an archive")
    assert cli_main(["compare", GOLDEN_RESULT, str(tmp_path / "junk.npz")]) == 2
    assert "junk.npz: not an .npz archive" in capsys.readouterr().err


def test_commands_write_files_that_crosscheck_reads(tmp_path, capsys):
    p, b, r = (str(tmp_path / name) for name in ("p.npz", "b.npz", "r.npz"))
    assert cli_main(["init-params", "--preset", "tiny", "--seed", "0", "--out", p]) == 0
    assert cli_main(["make-batch", "--preset", "tiny", "--seed", "1", "--out", b]) == 0
    assert cli_main(["crosscheck", p, b, "--out", r, "--lambda-coniso", "1"]) == 0
    assert "loss/conformal_isometry" in capsys.readouterr().out
    assert cli_main(["compare", GOLDEN_RESULT, r, "--rtol", "1e-10"]) == 0
    assert cli_main(["export-params", str(tmp_path / "no_run"), "--out", p]) == 2
    assert "no_run" in capsys.readouterr().err


# ------------------------------------------------------------------ validation

def _meta(key, value):
    return lambda meta: meta.__setitem__(key, value)


def _set(key, value):
    return lambda arrays: arrays.__setitem__(key, value)


def _drop(key):
    return lambda arrays: arrays.pop(key)


def _nan_at(key, index):
    def change(arrays):
        arrays[key] = arrays[key].copy()
        arrays[key][index] = np.nan
    return change


PARAMS_DAMAGE = {
    "wrong format": (dict(meta_change=_meta("format", "sicref-batch")), "meta 'format'"),
    "wrong version": (dict(meta_change=_meta("version", 2)), "meta 'version': expected 1"),
    "missing parameter": (dict(change=_drop("mlp/b1")), r"missing parameter\(s\) \['mlp/b1'\]"),
    "extra parameter": (dict(change=_set("mlp/W3", np.zeros((64, 2)))),
                        r"unexpected parameter\(s\) \['mlp/W3'\]"),
    "shape vs n_units": (dict(change=_set("g0_raw", np.zeros(9))),
                         r"key 'g0_raw': expected shape \(8,\), got \(9,\)"),
    "shape vs mlp_sizes": (dict(change=_set("mlp/W1", np.zeros((16, 17)))),
                           r"key 'mlp/W1': expected shape \(16, 16\)"),
    "mlp_sizes vs n_units": (dict(meta_change=_meta("mlp_sizes", [2, 16, 16, 63])),
                             "meta 'mlp_sizes': expected"),
    "activation": (dict(meta_change=_meta("activation", "tanh")), "meta 'activation'"),
    "non-finite": (dict(change=_nan_at("mlp/W2", (3, 5))),
                   r"key 'mlp/W2': 1 non-finite value\(s\), first at index \(3, 5\)"),
    "integer array": (dict(change=_set("g0_raw", np.zeros(8, dtype=int))),
                      "key 'g0_raw': expected a floating-point array"),
    "pickled entry": (dict(change=_set("g0_raw", np.array([None] * 8, dtype=object))),
                      "key 'g0_raw': holds pickled Python objects"),
    "meta not JSON": (dict(raw_meta=np.array("{format")), "key 'meta': not valid JSON"),
    "meta not a string": (dict(raw_meta=np.zeros(3)), "key 'meta': expected a 0-d string"),
}


@pytest.mark.parametrize("case", sorted(PARAMS_DAMAGE))
def test_damaged_params_files_are_refused_naming_file_and_key(tmp_path, case):
    edits, message = PARAMS_DAMAGE[case]
    bad = rewrite(GOLDEN_PARAMS, tmp_path / "bad.npz", **edits)
    with pytest.raises(InterchangeError, match=message) as err:
        read_params(bad)
    assert str(err.value).startswith(str(bad))


BATCH_DAMAGE = {
    "velocity shape": (dict(change=_set("velocities", np.zeros((4, 6, 3)))),
                       r"key 'velocities': expected shape \(B, T, 2\)"),
    "positions shape": (dict(change=_set("positions", np.zeros((4, 5, 2)))),
                        r"key 'positions': expected shape \(4, 6, 2\)"),
    "missing velocities": (dict(change=_drop("velocities")), "key 'velocities': missing"),
    "extra array": (dict(change=_set("perm", np.zeros((4, 6)))),
                    r"unexpected array\(s\) \['perm'\]"),
    "infinite velocity": (dict(change=_nan_at("velocities", (0, 1, 1))),
                          "key 'velocities': 1 non-finite"),
    "unknown loss setting": (dict(meta_change=_meta("loss", {"sigma": 1.0})),
                             r"unknown setting\(s\) \['sigma'\]"),
    "bad reduction": (dict(meta_change=_meta("loss", {"reduction": "max"})),
                      "loss.reduction"),
    "negative sigma_g": (dict(meta_change=_meta("loss", {"sigma_g": -0.4})), "loss.sigma_g"),
}


@pytest.mark.parametrize("case", sorted(BATCH_DAMAGE))
def test_damaged_batch_files_are_refused(tmp_path, case):
    edits, message = BATCH_DAMAGE[case]
    bad = rewrite(GOLDEN_BATCH, tmp_path / "bad.npz", **edits)
    with pytest.raises(InterchangeError, match=message) as err:
        read_batch(bad)
    assert str(err.value).startswith(str(bad))


def test_damaged_result_files_are_refused(tmp_path):
    for change, message in [
            (_drop("loss/separation"), r"missing key\(s\) \['loss/separation'\]"),
            (_set("grad/mlp/W0", np.zeros((3, 16))), r"grad/mlp/W0': expected shape \(2, 16\)"),
            (_set("grad/mlp/b2", np.zeros(63)), r"grad/mlp/b2': expected shape \(64,\)"),
            (_set("loss/total", np.zeros(1)), r"loss/total': expected shape \(\)"),
            (_nan_at("hidden_states", (1, 2, 3)), "hidden_states': 1 non-finite")]:
        bad = rewrite(GOLDEN_RESULT, tmp_path / "bad.npz", change)
        with pytest.raises(InterchangeError, match=message):
            read_result(bad)


def test_non_npz_and_truncated_files_are_refused(tmp_path):
    text = tmp_path / "text.npz"
    text.write_text("velocities: 1, 2, 3")
    npy = tmp_path / "array.npz"
    np.save(open(npy, "wb"), np.zeros(3))
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(open(GOLDEN_PARAMS, "rb").read()[:5000])
    no_meta = tmp_path / "no_meta.npz"
    np.savez(open(no_meta, "wb"), velocities=np.zeros((1, 1, 2)))
    cases = [(text, "not an .npz archive"), (npy, "not an .npz archive"),
             (truncated, "truncated or corrupt"), (no_meta, "key 'meta': missing"),
             (tmp_path / "absent.npz", "cannot open")]
    for path, message in cases:
        with pytest.raises(InterchangeError, match=message) as err:
            read_npz(path)
        assert str(err.value).startswith(str(path))


def test_corrupt_member_is_refused(tmp_path):
    """A zip whose member bytes were damaged (bad CRC) is refused, not half-read."""
    buf = io.BytesIO()
    np.savez(buf, meta=np.array(json.dumps({"format": "sicref-batch", "version": 1})),
             velocities=np.ones((2, 3, 2)))
    data = bytearray(buf.getvalue())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as z:
        info = z.getinfo("velocities.npy")
    offset = info.header_offset + 30 + len(info.filename) + 140
    data[offset] ^= 0xFF
    path = tmp_path / "crc.npz"
    path.write_bytes(bytes(data))
    with pytest.raises(InterchangeError, match="truncated or corrupt"):
        read_npz(path)


def test_check_result_reads_sizes_off_its_own_arrays():
    result, _ = read_result(GOLDEN_RESULT)
    wider = dict(result, **{"grad/mlp/W1": np.zeros((16, 17)), "grad/mlp/b1": np.zeros(17)})
    with pytest.raises(InterchangeError, match=r"grad/mlp/W2': expected shape \(17, 64\)"):
        check_result(wider)
    deeper = dict(result, **{"grad/mlp/W3": np.zeros((64, 64)), "grad/mlp/b3": np.zeros(64)})
    assert sorted(check_result(deeper)) == sorted(deeper)  # a consistent 4-layer MLP


# ------------------------------------------------------------------ the PyTorch example

def _load_example():
    spec = importlib.util.spec_from_file_location("crosscheck_torch", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-9), ("float32", 1e-4)])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_torch_example_agrees_with_crosscheck(tmp_path, dtype, rtol, reduction):
    pytest.importorskip("torch")
    params_path, batch_path = tiny_files(
        tmp_path, LossConfig(sigma_x=0.1, lambda_coniso=1.0, reduction=reduction))
    crosscheck(params_path, batch_path, tmp_path / "ref.npz")
    out = tmp_path / "torch.npz"
    assert _load_example().main([str(params_path), str(batch_path), "--out", str(out),
                                 "--dtype", dtype]) == 0
    read_result(out)  # a valid SPEC §8.3 file
    report = compare(tmp_path / "ref.npz", out, rtol=rtol)
    assert report.passed, format_comparison(report)


def test_torch_example_refuses_unusable_files_with_exit_2(tmp_path):
    pytest.importorskip("torch")
    example = _load_example()
    out = str(tmp_path / "r.npz")
    assert example.main([GOLDEN_BATCH, GOLDEN_BATCH, "--out", out]) == 2  # wrong format
    bad = rewrite(GOLDEN_PARAMS, tmp_path / "bad.npz", _set("mlp/W1", np.zeros((16, 17))))
    assert example.main([str(bad), GOLDEN_BATCH, "--out", out]) == 2  # wrong shape
    assert not os.path.exists(out)


def test_torch_example_without_torch_exits_3(tmp_path):
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "torch.py").write_text("raise ImportError('no torch here')\n")
    env = dict(os.environ, PYTHONPATH=str(blocker))
    out = tmp_path / "r.npz"
    proc = subprocess.run([sys.executable, EXAMPLE, GOLDEN_PARAMS, GOLDEN_BATCH,
                           "--out", str(out)], env=env, capture_output=True, text=True)
    assert proc.returncode == 3
    assert "PyTorch is not installed" in proc.stderr and not out.exists()
