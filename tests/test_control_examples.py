"""Tests for the control experiments of docs/experiments.md section 5:
examples/free_units.py and examples/teach_ideal_code.py; and examples/redraw_try.py,
the main job's `--redraw` path on one try."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from sicref.checkpoint import load_checkpoint
from sicref.config import preset
from sicref.model import init_params, transition_matrices
from sicref.train import train

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_freeing_units_redraws_exactly_their_connections():
    free = _example("free_units")
    n = 6
    params = init_params(np.random.default_rng(0), n, 5)
    units = free.parse_units("even", n)
    new = free.free_units(params, units, np.random.default_rng(1))
    v = np.random.default_rng(2).uniform(-0.15, 0.15, (7, 2))
    W_old, W_new = transition_matrices(params, v), transition_matrices(new, v)
    kept = np.setdiff1d(np.arange(n), units)
    # the kept units' connections among themselves are bit-identical, for any velocity
    assert np.array_equal(W_old[:, kept][:, :, kept], W_new[:, kept][:, :, kept])
    # every connection to or from a freed unit is redrawn
    assert not np.any(W_old[:, units, :] == W_new[:, units, :])
    assert not np.any(W_old[:, :, units] == W_new[:, :, units])
    assert np.array_equal(params["g0_raw"][kept], new["g0_raw"][kept])
    assert not np.any(params["g0_raw"][units] == new["g0_raw"][units])
    assert params["mlp/W0"] is not new["mlp/W0"] and np.array_equal(params["mlp/W0"],
                                                                   new["mlp/W0"])


def test_unit_lists_are_checked():
    free = _example("free_units")
    assert list(free.parse_units("2-4", 6)) == [2, 3, 4]
    assert list(free.parse_units("odd", 6)) == [1, 3, 5]
    with pytest.raises(ValueError, match="0..5"):
        free.parse_units("3,9", 6)


def test_units_outside_modules_come_from_an_evaluation_summary(tmp_path):
    free = _example("free_units")
    labels = [0, -1, 1, -1, 0, -1]
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"step": 7, "arenas": {"2m": {"units": [
        {"unit": i, "module": m} for i, m in enumerate(labels)]}}}))
    assert list(free.parse_units(f"outside:{path}", 6, step=7)) == [1, 3, 5]
    with pytest.raises(ValueError, match="the summary has 6 units, the network 8"):
        free.parse_units(f"outside:{path}", 8)
    with pytest.raises(ValueError, match="evaluated step 7, the checkpoint is at step 9"):
        free.parse_units(f"outside:{path}", 6, step=9)
    with pytest.raises(ValueError, match="not an evaluation summary"):
        free.parse_units(f"outside:{tmp_path / 'missing.json'}", 6)
    path.write_text(json.dumps({"step": 7, "arenas": {"2m": {"units": [
        {"unit": i, "module": 0} for i in range(6)]}}}))
    with pytest.raises(ValueError, match="nothing to free"):
        free.parse_units(f"outside:{path}", 6)


def test_a_taught_checkpoint_continues_with_sic(tmp_path, monkeypatch):
    teach = _example("teach_ideal_code")
    out = tmp_path / "taught.npz"
    # tiny preset: 8 units, 4 of them free, one module of 2 x 2
    monkeypatch.setattr(sys, "argv", ["teach", "--preset", "tiny", "--module", "0.5", "1.0",
                                      "--free", "4", "--steps", "3", "--out", str(out)])
    teach.main()
    state = load_checkpoint(out)
    assert state["step"] == 0 and state["config"] == preset("tiny")
    cfg = preset("tiny")
    run = train(cfg, tmp_path / "run", init_from=str(out), log=lambda *a: None)
    assert load_checkpoint(tmp_path / "run")["step"] == cfg.train.steps
    assert run is not None
    with pytest.raises(SystemExit):  # existing output is never overwritten
        teach.main()


def test_teacher_loss_is_the_mean_squared_distance_to_the_targets():
    teach = _example("teach_ideal_code")
    from sicref.data import sample_batch
    from sicref.model import rollout_permuted

    params = init_params(np.random.default_rng(0), 5, 6)
    batch = sample_batch(np.random.default_rng(1), 3, 4)
    g0, states = rollout_permuted(params, batch.base, batch.perm)
    own = states.reshape(-1, 5)
    # the network's own states as targets: zero; free units never enter
    assert teach.teacher_loss(params, batch, g0, own, 1e-8) == 0.0
    assert teach.teacher_loss(params, batch, g0[2:], own[:, 2:], 1e-8,
                              free=2) == 0.0
    # every target moved by 0.1 in each of the 3 taught units, g0's target by 0.2 in each:
    # 3 * 0.01 per state (mean over states) + 3 * 0.04 for g0
    value = teach.teacher_loss(params, batch, g0[2:] + 0.2, own[:, 2:] + 0.1, 1e-8, free=2)
    assert value == pytest.approx(3 * 0.01 + 3 * 0.04, rel=1e-12)


def test_a_start_checkpoint_holds_the_parameters_at_step_zero(tmp_path):
    from sicref.checkpoint import save_start_checkpoint

    cfg = preset("tiny")
    params = init_params(np.random.default_rng(3), cfg.model.n_units, cfg.model.hidden)
    save_start_checkpoint(tmp_path / "s.npz", params, cfg, seed=4)
    state = load_checkpoint(tmp_path / "s.npz")
    assert state["step"] == 0 and state["config"] == cfg
    assert all(np.array_equal(state["params"][k], params[k]) for k in params)
    assert state["opt_state"]["t"] == 0
    assert all(not state["opt_state"]["m"][k].any() for k in params)


def short_redraw(monkeypatch):
    """The redrawn try at T = 8 with readings every 2 steps, the rescale 2 steps."""
    import sicref.grow

    monkeypatch.setattr(sicref.grow, "REDRAW_SEQ_LEN", 8)
    monkeypatch.setattr(sicref.grow, "REDRAW_ANNEAL", {
        **sicref.grow.REDRAW_ANNEAL, "anneal_check_every": 2, "anneal_check_from": 2,
        "anneal_give_up": 6, "anneal_steps": 4})
    monkeypatch.setattr(sicref.grow, "REDRAW_STEPS", 10)
    monkeypatch.setattr(sicref.grow, "RESCALE_STEPS", 2)


def test_redraw_try_redraws_rescales_evaluates_and_grows_as_the_main_job(tmp_path,
                                                                        monkeypatch):
    import sicref.evaluate
    import sicref.grow
    from sicref.config import replace

    # every gate reading a lattice: the redrawn try opens at its first reading and
    # confirms at the next; short schedules so that it runs in seconds
    monkeypatch.setattr(sicref.evaluate, "grid_check", lambda params, cfg, **k: (0.5, 0.1))
    short_redraw(monkeypatch)
    monkeypatch.setattr(sicref.grow, "GROW_CHECKPOINT_EVERY", 1)
    try_cfg = replace(preset("tiny"), train={"seed": 1005, "steps": 4})
    train(try_cfg, str(tmp_path / "try"), log=lambda line: None)
    lines = []
    out = tmp_path / "out"
    assert _example("redraw_try").main([str(tmp_path / "try"), "--seed", "5", "--out",
                                        str(out), "--grow-steps", "2"],
                                       log=lines.append) == 0
    redrawn = load_checkpoint(str(out / "redrawn"))
    assert redrawn["config"].data.seq_len == 8 and redrawn["config"].train.seed == 1005
    assert redrawn["step"] == 4  # the switch at 2, confirmed at 4: it ends there
    assert "redrawn try: caught" in lines
    # rescaled from the confirmed checkpoint (step 4), at the try's stage T, 2 steps
    rescaled = load_checkpoint(str(out / "rescaled"))
    assert rescaled["step"] == 2 and rescaled["config"].train.seed == 1005
    again = train(rescaled["config"], str(tmp_path / "again"),
                  init_from=str(out / "redrawn/checkpoints/step_4.npz"),
                  log=lambda line: None)
    assert all((again[k] == rescaled["params"][k]).all() for k in again)
    assert "rescaled: gate reading 50% -> 50%" in lines
    summary = json.loads((out / "evaluation/summary.json").read_text())
    assert summary["checkpoint"].startswith(str(out / "rescaled"))
    assert (summary["walk"]["n_walks"], summary["walk"]["n_steps"]) == (800, 100)
    assert sorted(summary["arenas"]) == ["2m", "3m", "4m"]
    # and the stage grew it at 1.5 times its T, from the main job's seed
    grown = load_checkpoint(str(out / "grow/run"))
    assert grown["step"] == 2 and grown["config"].train.seed == 5
    assert grown["config"].data.seq_len == 3 * rescaled["config"].data.seq_len // 2
    assert any(ln.startswith("grow: ") and "trained to step 2" in ln for ln in lines)


def test_redraw_try_stops_where_the_rescale_loses_the_lattice(tmp_path, monkeypatch):
    import sicref.evaluate
    from sicref.config import replace

    # the redrawn try reads 50 % at every reading, its rescale 30 % (below)
    monkeypatch.setattr(sicref.evaluate, "grid_check", lambda params, cfg, **k: (0.5, 0.1))
    short_redraw(monkeypatch)
    train(replace(preset("tiny"), train={"seed": 7, "steps": 4}), str(tmp_path / "try"),
          log=lambda line: None)
    lines = []
    ex = _example("redraw_try")
    import sicref.run
    monkeypatch.setattr(sicref.run, "rescale_readings", lambda run_dir, rescaled: (0.5, 0.3))
    assert ex.main([str(tmp_path / "try"), "--seed", "1", "--out", str(tmp_path / "out"),
                    "--grow-steps", "2"], log=lines.append) == 0
    assert "rescaled: gate reading 50% -> 30%" in lines
    assert lines[-1] == "the rescale lost the lattice; not evaluated"
    assert not (tmp_path / "out/evaluation").exists()
    assert not (tmp_path / "out/grow").exists()
