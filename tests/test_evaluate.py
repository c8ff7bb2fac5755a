import json

import numpy as np
import pytest

from sicref.cli import main
from sicref.config import preset, replace
from sicref.evaluate import (WalkConfig, distance_curve, headline, path_invariance_error,
                             random_walks)
from sicref.model import init_params
from sicref.sweep import grid_configs, one_at_a_time_configs, parse_override
from sicref.train import train


@pytest.mark.parametrize("L", [1.0, 2.0, 4.0])
def test_walks_stay_in_the_arena_and_velocities_are_the_displacements(L):
    v, x = random_walks(np.random.default_rng(0), L, WalkConfig(n_walks=20, n_steps=300))
    assert np.all(np.abs(x) <= L / 2 + 1e-12)
    np.testing.assert_allclose(np.cumsum(v, axis=1), x, atol=1e-10)
    np.testing.assert_allclose(np.linalg.norm(v, axis=-1), 0.06)
    # the walks reach the walls: coverage is not confined to the centre
    assert np.abs(x).max() > 0.45 * L


def test_path_invariance_error_is_zero_for_a_constant_code():
    cfg = preset("tiny")
    params = init_params(np.random.default_rng(0), cfg.model.n_units, cfg.model.hidden)
    # zero recurrent matrices except a positive bias: every state is the same vector
    for k in range(3):
        params[f"mlp/W{k}"] = np.zeros_like(params[f"mlp/W{k}"])
    params["mlp/b2"] = np.abs(params["mlp/b2"]) + 0.1
    r = path_invariance_error(params, cfg, np.random.default_rng(1), n_bases=3)
    assert r["within"] == pytest.approx(0, abs=1e-12)


def test_distance_curve_of_a_code_equal_to_position():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(1, 500, 2))
    curve = distance_curve(x, x, rng, n_points=300, n_bins=10)
    mid = np.array(curve["spatial"])
    np.testing.assert_allclose(curve["neural"], mid, atol=0.6 * (mid[1] - mid[0]))


def test_evaluate_writes_every_file(tmp_path):
    run = tmp_path / "run"
    train(replace(preset("tiny"), train={"steps": 10}), run, log=lambda s: None)
    out = tmp_path / "eval"
    assert main(["evaluate", str(run), "--arena", "1", "2", "--nbins", "16",
                 "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    expected = {"summary.json", "distance.png", "arenas.png", "losses.png"}
    for tag in ("1m", "2m"):
        expected |= {f"ratemaps_{tag}.png", f"sacs_{tag}.png", f"gridness_{tag}.png"}
    assert expected <= names
    s = json.loads((out / "summary.json").read_text())
    a = s["arenas"]["2m"]
    assert len(a["units"]) == 8 and 0 <= a["grid_fraction"] <= 1
    assert {"score60", "score60_mean", "score90", "period_m", "orientation",
            "coherence", "start_share", "module", "spectral_period_m"} <= set(a["units"][0])
    assert 0 < a["coverage"] <= 1
    m = a["modules"]
    assert m["min_size"] >= 3 and set(m["left_out"]) == {"periods", "sizes"}
    assert m["min_coherence"] == 0.5 and 0 <= m["incoherent"] <= 8
    assert m["max_start_share"] == 0.25 and 0 <= m["start_dominated"] <= 8
    assert all(n >= m["min_size"] for n in m["sizes"])
    assert m["period_mismatch"]["tolerance"] == 0.2 and not m["period_mismatch"]["excluded"]
    assert 0 <= m["period_mismatch"]["grid_units"] <= 8
    # the split-half reading beside the rule agrees with the per-unit records
    units = a["units"]
    assert all(u["reliability"] is None or -1 <= u["reliability"] <= 1 for u in units)
    rel = m["reliable"]

    def ok(u):
        return u["reliability"] is not None and u["reliability"] >= rel["threshold"]
    assert rel["threshold"] == 0.5
    assert rel["grid_units"] == sum(
        ok(u) and u["score60"] is not None and u["score60"] > a["grid_threshold"]
        for u in units)
    assert rel["sizes"] == [sum(ok(u) and u["module"] == k for u in units)
                            for k in range(len(m["sizes"]))]
    assert all("split-half reliable" in line for line in headline(s)[:2])
    assert "relative" in s["path_invariance"] and s["distance_curve"]["neural"]
    # the output directory is not overwritten silently
    assert main(["evaluate", str(run), "--out", str(out)]) == 2
    # a minimum module fraction outside [0, 1) is refused before any work
    assert main(["evaluate", str(run), "--min-module-fraction", "1.5",
                 "--out", str(tmp_path / "eval2")]) == 2
    assert not (tmp_path / "eval2").exists()
    # so is a minimum coherence outside [0, 1]
    assert main(["evaluate", str(run), "--min-coherence", "1.5",
                 "--out", str(tmp_path / "eval3")]) == 2
    assert not (tmp_path / "eval3").exists()
    # and a maximum start share outside (0, 1]
    assert main(["evaluate", str(run), "--max-start-share", "0",
                 "--out", str(tmp_path / "eval4")]) == 2
    assert not (tmp_path / "eval4").exists()
    # and a maximum period mismatch that is not > 0
    assert main(["evaluate", str(run), "--max-period-mismatch", "-0.1",
                 "--out", str(tmp_path / "eval5")]) == 2
    assert not (tmp_path / "eval5").exists()
    # with it, the summary records its tolerance and that the rule was applied
    assert main(["evaluate", str(run), "--arena", "2", "--nbins", "16",
                 "--max-period-mismatch", "0.3", "--out", str(tmp_path / "eval6")]) == 0
    m6 = json.loads((tmp_path / "eval6" / "summary.json").read_text())["arenas"]["2m"]
    assert m6["modules"]["period_mismatch"]["tolerance"] == 0.3
    assert m6["modules"]["period_mismatch"]["excluded"]


def test_sweep_designs():
    base = preset("tiny")
    grid = grid_configs(base, ["loss.sigma_g=0.3,0.5", "train.seed=0,1"])
    assert len(grid) == 4 and grid[3][1].loss.sigma_g == 0.5 and grid[3][1].train.seed == 1
    oat = one_at_a_time_configs(base, ["loss.sigma_g=0.3,0.5", "model.n_units=8,16"])
    assert [n for n, _ in oat] == ["base", "sigma_g=0.3", "sigma_g=0.5", "n_units=16"]
    with pytest.raises(ValueError, match="loss.sigmag"):
        parse_override("loss.sigmag=1", base)


def test_sweep_runs_and_does_not_redo_finished_runs(tmp_path):
    out = tmp_path / "sweep"
    args = ["sweep", "--preset", "tiny", "--set", "train.steps=10", "loss.sigma_g=0.3,0.5",
            "--out", str(out)]
    assert main(args) == 0
    rows = [json.loads(ln) for ln in (out / "table.jsonl").read_text().splitlines()]
    assert [r["status"] for r in rows] == ["done", "done"]
    stamp = (out / "steps=10_sigma_g=0.3/evaluation/summary.json").stat().st_mtime_ns
    assert main(args) == 0
    assert (out / "steps=10_sigma_g=0.3/evaluation/summary.json").stat().st_mtime_ns == stamp
    assert "| steps=10_sigma_g=0.5 | done |" in (out / "table.md").read_text()


def test_main_job_trains_evaluates_and_continues(tmp_path, capsys, monkeypatch):
    from sicref.train import THREAD_VARS

    for name in THREAD_VARS:  # as `sicref run` sets them; else it re-executes itself
        monkeypatch.setenv(name, "1")
    out = tmp_path / "main"
    assert main(["run", "--preset", "tiny", "--steps", "10", "--out", str(out),
                 "--grow-steps", "3", "--grow-until-two", "--redraw"]) == 0
    err = capsys.readouterr().err
    assert "figures:" in err and "grid units" in err
    # tiny has no annealing gate, so no lattice is caught: nothing to grow beside
    assert "grow: skipped, no try caught a lattice" in err and not (out / "grow").exists()
    assert "--redraw ignored: the preset has no annealing gate" in err
    s = json.loads((out / "evaluation/summary.json").read_text())
    assert set(s["arenas"]) == {"2m", "3m", "4m"} and s["step"] == 10
    over = json.loads((out / "evaluation/over_training.json").read_text())
    assert [r["step"] for r in over] == [10]
    assert [s["arenas"][k]["nbins"] for k in ("2m", "3m", "4m")] == [32, 48, 64]
    # a second call with more steps continues the same run
    assert main(["run", "--preset", "tiny", "--steps", "15", "--out", str(out)]) == 0
    s = json.loads((out / "evaluation/summary.json").read_text())
    assert s["step"] == 15


def test_gridness_over_training_scores_every_checkpoint(tmp_path):
    run = tmp_path / "run"
    train(replace(preset("tiny"), train={"steps": 20, "checkpoint_every": 5}), run,
          log=lambda s: None)
    out = tmp_path / "eval"
    assert main(["evaluate", str(run), "--arena", "2", "--nbins", "16", "--over-training",
                 "--out", str(out)]) == 0
    rows = json.loads((out / "over_training.json").read_text())
    assert [r["step"] for r in rows] == [5, 10, 15, 20]
    assert (out / "over_training.png").exists()


def test_an_evaluation_is_reused_only_for_the_same_checkpoint_and_settings(
        tmp_path, monkeypatch):
    import shutil

    import sicref.evaluate as ev

    run = tmp_path / "run"
    train(replace(preset("tiny"), train={"steps": 10, "checkpoint_every": 5}), run,
          log=lambda s: None)
    out, lines = tmp_path / "eval", []
    kw = dict(arenas=(2.0,), nbins=16, walk=WalkConfig(n_walks=4, n_steps=30),
              log=lines.append, reuse=True)
    first = ev.evaluate_run(str(run), str(out), **kw)
    rows = ev.write_over_training(str(run), str(out), 2.0, 16, log=lines.append,
                                  walk=WalkConfig(n_walks=2, n_steps=30), reuse=True)
    assert first["request"]["checkpoint_sha256"] == ev.file_sha256(
        run / "checkpoints/latest.npz")
    assert set(first["figures"]) <= {p.name for p in out.iterdir()}
    calls = []
    real, real_reading = ev.evaluate, ev.analyse_arena

    def evaluate(*a, **k):  # its own arena analyses are not checkpoint readings
        calls.append("eval")
        monkeypatch.setattr(ev, "analyse_arena", real_reading)
        try:
            return real(*a, **k)
        finally:
            monkeypatch.setattr(ev, "analyse_arena", reading)

    def reading(*a, **k):
        calls.append("read")
        return real_reading(*a, **k)

    monkeypatch.setattr(ev, "evaluate", evaluate)
    monkeypatch.setattr(ev, "analyse_arena", reading)
    # the same request: nothing is computed, the same numbers come back
    lines.clear()
    assert ev.evaluate_run(str(run), str(out), **kw) == json.loads(json.dumps(first))
    again = ev.write_over_training(str(run), str(out), 2.0, 16, log=lines.append,
                                   walk=WalkConfig(n_walks=2, n_steps=30), reuse=True)
    assert calls == [] and again == json.loads(json.dumps(rows))
    assert any("not evaluated again" in ln for ln in lines)
    assert sum(ln.endswith("(read before)") for ln in lines) == 2
    # other code, another seed, a missing figure, other checkpoint bytes: evaluated again
    monkeypatch.setattr(ev, "code_id", lambda: "0.1.0 changed")
    ev.evaluate_run(str(run), str(out), **kw)
    ev.write_over_training(str(run), str(out), 2.0, 16, log=lines.append,
                           walk=WalkConfig(n_walks=2, n_steps=30), reuse=True)
    assert calls == ["eval", "read", "read"]
    calls.clear()
    ev.evaluate_run(str(run), str(out), seed=1, **kw)
    assert calls == ["eval"]
    (out / first["figures"][0]).unlink()
    ev.evaluate_run(str(run), str(out), seed=1, **kw)
    assert calls == ["eval"] * 2
    other = tmp_path / "other"
    train(replace(preset("tiny"), train={"steps": 10, "seed": 1}), other,
          log=lambda s: None)
    shutil.copy(other / "checkpoints/step_10.npz", run / "checkpoints/step_10.npz")
    calls.clear()
    ev.write_over_training(str(run), str(out), 2.0, 16, log=lines.append,
                           walk=WalkConfig(n_walks=2, n_steps=30), reuse=True)
    assert calls == ["read"]  # step 5 is reused, step 10's bytes changed
    # an unreadable summary or reading file is not trusted: computed again, said so
    (out / "summary.json").write_text("{not json")
    (out / "over_training.json").write_text("[1, ")
    calls.clear()
    lines.clear()
    ev.evaluate_run(str(run), str(out), seed=1, **kw)
    ev.write_over_training(str(run), str(out), 2.0, 16, log=lines.append,
                           walk=WalkConfig(n_walks=2, n_steps=30), reuse=True)
    assert calls == ["eval", "read", "read"]
    assert sum("is unreadable" in ln for ln in lines) == 2
    # a missing checkpoint is refused as such, before any request is made of it
    from sicref.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="no such checkpoint"):
        ev.evaluate_run(str(run / "checkpoints/step_99.npz"), str(out), **kw)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        ev.checkpoint_reading(str(run / "checkpoints/step_99.npz"))
    # without reuse a non-empty directory is refused, as before
    with pytest.raises(ValueError, match="not empty"):
        ev.evaluate_run(str(run), str(out), arenas=(2.0,), nbins=16, log=lines.append)


def test_walk_count_and_length_are_chosen_and_recorded(tmp_path, capsys):
    run = tmp_path / "run"
    train(replace(preset("tiny"), train={"steps": 10, "checkpoint_every": 5}), run,
          log=lambda s: None)
    out = tmp_path / "eval"
    assert main(["evaluate", str(run), "--arena", "2", "--nbins", "16", "--walks", "6",
                 "--walk-steps", "30", "--over-training", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["walk"]["n_walks"] == 6 and s["walk"]["n_steps"] == 30
    rows = json.loads((out / "over_training.json").read_text())
    assert [(r["step"], r["walk"]["n_walks"], r["walk"]["n_steps"]) for r in rows] == [
        (5, 3, 30), (10, 3, 30)]
    for bad, match in [(["--walks", "1"], "--walks must be >= 2"),
                       (["--walk-steps", "20"], "--walk-steps must be > 20")]:
        assert main(["evaluate", str(run), "--out", str(tmp_path / "bad")] + bad) == 2
        assert match in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()  # refused before any work


def test_rollout_threads_change_the_wall_time_not_the_states():
    from sicref.evaluate import rollout_chunked
    from sicref.model import rollout

    cfg = preset("tiny")
    params = init_params(np.random.default_rng(3), cfg.model.n_units, cfg.model.hidden)
    v, _ = random_walks(np.random.default_rng(4), 2.0, WalkConfig(n_walks=7, n_steps=25))
    # one chunk per walk, in order: the states a sequential loop would give
    one_by_one = np.concatenate([rollout(params, v[i:i + 2], cfg.model.norm_eps)[1]
                                 for i in range(0, 7, 2)])
    for workers in (1, 2, 3, 8):
        got = rollout_chunked(params, v, cfg.model.norm_eps, chunk=2, workers=workers)
        assert got.shape == (7, 25, cfg.model.n_units)
        np.testing.assert_array_equal(got, one_by_one)  # walk order kept, to the bit
    whole = rollout(params, v, cfg.model.norm_eps)[1]  # all walks at once: BLAS may
    np.testing.assert_allclose(got, whole, rtol=1e-12, atol=1e-12)  # sum in another order
    with pytest.raises(ValueError, match="workers must be >= 1"):
        rollout_chunked(params, v, cfg.model.norm_eps, workers=0)


def test_evaluate_workers_give_the_same_summary(tmp_path, capsys):
    run = tmp_path / "run"
    train(replace(preset("tiny"), train={"steps": 10, "checkpoint_every": 5}), run,
          log=lambda s: None)
    common = ["evaluate", str(run), "--arena", "2", "3", "--nbins", "16", "--walks", "120",
              "--walk-steps", "30", "--over-training"]
    for w in ("1", "3"):
        assert main(common + ["--workers", w, "--out", str(tmp_path / f"w{w}")]) == 0
    for name in ("summary.json", "over_training.json"):
        one, three = ((tmp_path / d / name).read_text() for d in ("w1", "w3"))
        assert one == three  # figures list and request included: workers is not asked
    assert main(common + ["--workers", "0", "--out", str(tmp_path / "bad")]) == 2
    assert "--workers must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_period_consistency_counts_grid_units_within_ten_percent():
    from sicref.evaluate import period_consistency

    arrays = {2.0: {"is_grid": np.array([True, True, False, True]),
                    "period_m": np.array([0.50, 0.70, 0.30, 0.60])},
              3.0: {"period_m": np.array([0.54, 0.90, 0.30, np.nan])},
              4.0: {"period_m": np.array([0.46, 0.64, 9.00, 0.65])}}
    # 3 m: 0.54/0.50 (8 %) kept, 0.90/0.70 (29 %) not, NaN not; the non-grid unit ignored
    # 4 m: 8 %, 8.6 % and 8.3 %: all kept
    out = period_consistency(arrays)
    assert out["3m"] == pytest.approx(1 / 3) and out["4m"] == pytest.approx(1.0)


def test_best_units_show_module_units_before_higher_scoring_strays():
    from types import SimpleNamespace

    from sicref.plots import best_units
    # unit 0 scores highest but is in no module (a noisy stray); units 2 and 3 are in
    # module 0, unit 4 in module 1, unit 1 is silent (NaN score).
    score60 = np.array([0.9, np.nan, 0.4, 0.6, 0.5, 0.1])
    a = {"scores": SimpleNamespace(score60=score60),
         "labels": np.array([-1, -1, 0, 0, 1, -1])}
    assert best_units(a, 6).tolist() == [3, 4, 2, 0, 5, 1]
    assert best_units(a, 2).tolist() == [3, 4]


def _lattice_map(period_bins, n=32, phase=(0.0, 0.0), angle=0.0):
    """A hexagonal lattice of round fields: three plane waves 60 degrees apart, summed."""
    y, x = np.mgrid[0:n, 0:n].astype(float)
    k = 4 * np.pi / (np.sqrt(3) * period_bins)
    waves = sum(np.cos(k * (np.cos(a) * (x - phase[0]) + np.sin(a) * (y - phase[1])))
                for a in angle + np.radians([0, 60, 120]))
    return np.maximum(waves, 0)


def _sparse_noise_map(rng, n=32, n_spikes=12):
    """Scattered single-bin activity: what a nearly silent unit's ratemap looks like."""
    m = np.zeros((n, n))
    m.flat[rng.choice(n * n, n_spikes, replace=False)] = rng.uniform(0.5, 1.0, n_spikes)
    return m


def test_incoherent_grid_units_are_not_clustered_into_a_module():
    from sicref.evaluate import ModuleRule, assign_modules
    from sicref.gridness import spatial_coherence
    rng = np.random.default_rng(0)
    # 40 lattice units at 0.7 m and 10 sparse-noise units with scattered periods, all
    # taken to be grid units (noise maps can pass the score60 threshold).
    maps = np.array([_lattice_map(11.2, phase=rng.uniform(0, 11, 2)) for _ in range(40)]
                    + [_sparse_noise_map(rng) for _ in range(10)])
    coherence = spatial_coherence(maps)
    assert np.all(coherence[:40] > 0.9) and np.all(coherence[40:] < 0.3)
    period_m = np.concatenate([np.full(40, 0.7) * rng.uniform(0.99, 1.01, 40),
                               np.geomspace(0.2, 0.5, 10)])
    is_grid = np.ones(50, bool)
    labels, periods, left_out, min_size, clustered = assign_modules(period_m, is_grid,
                                                                    coherence)
    assert len(periods) == 1 and abs(periods[0] - 0.7) < 0.01
    assert np.all(labels[:40] == 0) and np.all(labels[40:] == -1)
    assert clustered.sum() == 40 and min_size == 4 and len(left_out[0]) == 0
    # without the rule the noise units form a second "module" of their own
    labels0, periods0, *_ = assign_modules(period_m, is_grid, coherence,
                                           rule=ModuleRule(0.0, 0.0))
    assert len(periods0) == 2 and np.all(labels0[:40] == 1) and np.sum(labels0 == 0) >= 3


def test_a_coherent_second_module_is_still_counted():
    from sicref.evaluate import assign_modules
    from sicref.gridness import spatial_coherence
    rng = np.random.default_rng(1)
    maps = np.array([_lattice_map(11.2, phase=rng.uniform(0, 11, 2)) for _ in range(30)]
                    + [_lattice_map(7.6, phase=rng.uniform(0, 7, 2), angle=0.3)
                       for _ in range(12)])
    period_m = np.concatenate([np.full(30, 0.70), np.full(12, 0.475)])
    labels, periods, *_ = assign_modules(period_m, np.ones(42, bool),
                                         spatial_coherence(maps))
    assert np.allclose(periods, [0.475, 0.70])
    assert np.all(labels[:30] == 1) and np.all(labels[30:] == 0)


def test_start_share_of_hand_made_activity():
    from sicref.evaluate import start_share
    states = np.zeros((3, 400, 4))
    states[:, :, 0] = 0.2                 # even in time: 20 of 400 steps
    states[:, :10, 1] = 0.7               # only in the first 10 steps of each walk
    states[0, 100:, 3] = 1.0              # late in one walk,
    states[1, :20, 3] = 1.0               # early in another: 20 of 320 unit-steps
    share = start_share(states)
    np.testing.assert_allclose(share[[0, 1, 3]], [20 / 400, 1.0, 20 / 320])
    assert np.isnan(share[2])             # silent throughout
    np.testing.assert_allclose(start_share(states, start_steps=100)[0], 0.25)
    with pytest.raises(ValueError, match="start_steps = 20"):
        start_share(states[:, :20])       # walks no longer than the start window


def test_units_active_mostly_at_the_start_are_not_clustered():
    """Units that fire mainly while the state is still near g_0 (the first steps of
    every walk) leave a spot near the arena centre that can pass score60 with a
    spurious period; they must not make a second module."""
    from sicref.evaluate import ModuleRule, assign_modules
    rng = np.random.default_rng(2)
    period_m = np.concatenate([0.66 * rng.uniform(0.99, 1.01, 40),
                               [0.38, 0.42, 0.45, 0.45, 0.48, 0.51]])
    start = np.concatenate([rng.uniform(0.02, 0.1, 40), [0.99, 0.93, 0.73, 0.61, 0.44,
                                                         0.37]])
    coherence = np.full(46, 0.9)
    is_grid = np.ones(46, bool)
    labels, periods, _, _, clustered = assign_modules(period_m, is_grid, coherence,
                                                      start=start)
    assert len(periods) == 1 and abs(periods[0] - 0.66) < 0.01
    assert clustered.sum() == 40 and np.all(labels[40:] == -1)
    # with the start test off (or no shares given) they form a module of their own
    for kw in ({"start": start, "rule": ModuleRule(max_start_share=1.0)}, {}):
        labels1, periods1, *_ = assign_modules(period_m, is_grid, coherence, **kw)
        assert len(periods1) == 2 and np.all(labels1[40:] == 0)
    # the limit is inclusive: a share equal to it is clustered
    _, _, _, _, at_limit = assign_modules(period_m, is_grid, coherence,
                                          rule=ModuleRule(max_start_share=0.37),
                                          start=start)
    assert at_limit.sum() == 41


def test_module_rule_refuses_values_out_of_range():
    from sicref.evaluate import ModuleRule
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="max start share"):
            ModuleRule(max_start_share=bad)
    with pytest.raises(ValueError, match="min coherence"):
        ModuleRule(0.1, 1.5)
    with pytest.raises(ValueError, match="min module fraction"):
        ModuleRule(1.0, 0.5)


def test_sweep_threads_option_is_per_run_not_a_reexecution(monkeypatch):
    """`sweep --threads` sets each run's BLAS threads; only train/evaluate --threads
    re-execute the command itself."""
    import sicref.cli as cli

    def no_execve(*a):
        raise AssertionError("execve called")

    monkeypatch.setattr(cli.os, "execve", no_execve)
    args = cli.build_parser().parse_args(["sweep", "--preset", "tiny", "--set",
                                          "train.steps=1", "--out", "x", "--threads", "2"])
    cli.reexec_for_threads(args, [])  # returns without re-executing
    assert args.threads == 2


def _narrow_fields(period_bins, n=64, phase=(0.0, 0.0), angle=0.0, level=2.0):
    """Small round fields on a hexagonal lattice: the three waves' sum above `level`."""
    y, x = np.mgrid[0:n, 0:n].astype(float)
    k = 4 * np.pi / (np.sqrt(3) * period_bins)
    waves = sum(np.cos(k * (np.cos(a) * (x - phase[0]) + np.sin(a) * (y - phase[1])))
                for a in angle + np.radians([0, 60, 120]))
    return np.maximum(waves - level, 0)


def test_the_spectral_cross_check_catches_a_coarse_lattice_with_a_faint_fine_copy():
    """SPEC §7.5: a coarse lattice of small fields carrying a faint copy of a lattice
    three times finer has its six nearest SAC peaks at the fine spacing, while its power
    spectrum peaks at the coarse one. The mismatch is reported, and with
    max_period_mismatch such units stay out of the fine module."""
    from sicref.evaluate import ModuleRule, assign_modules, period_mismatch
    from sicref.gridness import grid_scores, spatial_coherence
    from sicref.lattice import spectral_period
    rng = np.random.default_rng(5)
    fine = [_lattice_map(5.0, n=64, phase=rng.uniform(0, 5, 2), angle=0.1)
            for _ in range(12)]
    coarse = [_narrow_fields(15.0, phase=rng.uniform(0, 15, 2)) for _ in range(16)]
    copies = [_narrow_fields(15.0, phase=rng.uniform(0, 15, 2))
              + 0.1 * _lattice_map(5.0, n=64, phase=rng.uniform(0, 5, 2), angle=0.1)
              for _ in range(6)]
    maps = np.array(fine + coarse + copies)
    scores = grid_scores(maps)
    bin_m = 0.05
    period_m, spectral_m = scores.period * bin_m, spectral_period(maps) * bin_m
    is_grid = scores.score60 > 0.3
    assert is_grid.all()
    # the six nearest SAC peaks see the fine copy; the spectrum sees the coarse lattice
    np.testing.assert_allclose(period_m[28:], 0.25, rtol=0.1)
    np.testing.assert_allclose(spectral_m[12:], 0.75, rtol=0.1)
    mismatch = period_mismatch(period_m, spectral_m)
    assert np.array_equal(np.flatnonzero(mismatch), np.arange(28, 34))
    assert not period_mismatch(1.0, 1.2) and period_mismatch(1.0, 1.21)
    assert period_mismatch(np.nan, 1.0) and period_mismatch(1.0, np.nan)
    coherence = spatial_coherence(maps)
    labels, periods, *_ = assign_modules(period_m, is_grid, coherence)
    assert [np.sum(labels == k) for k in range(2)] == [18, 16]  # copies in the fine one
    rule = ModuleRule(max_period_mismatch=0.2)
    labels, periods, _, _, clustered = assign_modules(period_m, is_grid, coherence,
                                                      rule=rule, spectral_m=spectral_m)
    assert [np.sum(labels == k) for k in range(2)] == [12, 16]
    assert np.all(labels[28:] == -1) and clustered.sum() == 28
    np.testing.assert_allclose(periods, [0.25, 0.75], rtol=0.1)
    with pytest.raises(ValueError, match="needs spectral_m"):
        assign_modules(period_m, is_grid, coherence, rule=rule)


def test_module_rule_refuses_a_bad_period_mismatch():
    from sicref.evaluate import ModuleRule
    for bad in (0.0, -0.2, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="max period mismatch"):
            ModuleRule(max_period_mismatch=bad)
    assert ModuleRule(max_period_mismatch=0.2).max_period_mismatch == 0.2


def test_over_training_labels_name_module_periods_or_counts():
    """Few checkpoints: each one's module periods (largest first); many: the counts."""
    from sicref.plots import OVER_TRAINING_PERIOD_LABELS, module_labels

    def row(step, periods):
        return {"step": step, "modules": {"periods": periods}}

    labels, what = module_labels([row(1000, []), row(2000, [0.4912, 0.8566]),
                                  row(3000, [0.7])])
    assert labels == [(2000, "0.86\n0.49"), (3000, "0.70")] and what == "module periods, m"
    many = [row(500 * i, [0.5, 0.9]) for i in range(OVER_TRAINING_PERIOD_LABELS + 1)]
    labels, what = module_labels(many)
    assert {label for _, label in labels} == {"2"} and what == "number of modules"
