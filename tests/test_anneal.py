"""Gridness-gated annealing: the switch, its semantics, resume across it, the gate."""

import json

import numpy as np
import pytest

import sicref.evaluate
from sicref.checkpoint import CheckpointError, atomic_savez, load_checkpoint, read_npz
from sicref.config import preset, replace
from sicref.evaluate import grid_check
from sicref.optim import adamw_init, plateau_init
from sicref.train import run_ended, train, train_step

QUIET = dict(log=lambda line: None)


def anneal_cfg(steps=100, **optim):
    o = {"anneal_lr": 1e-3, "anneal_check_every": 5, "anneal_steps": 7,
         "anneal_grid_fraction": 0.3, **optim}
    return replace(preset("tiny"), optim=o, train={"steps": steps, "checkpoint_every": 5})


@pytest.fixture
def scripted_gate(monkeypatch):
    """grid_check reads 0 before step 10 and 0.5 from then on (counted by calls)."""
    calls = []

    def fake(params, cfg, arena_size=2.0, n_walks=100, seed=0, n_steps=400):
        calls.append(n_walks)
        step = 5 * len(calls)
        return (0.5 if step >= 10 else 0.0), 0.1

    monkeypatch.setattr(sicref.evaluate, "grid_check", fake)
    return calls


def read_jsonl(path):
    return [json.loads(ln) for ln in path.read_text().splitlines()]


def params_equal(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_switch_restarts_adamw_at_the_new_lr_and_ends_anneal_steps_later(tmp_path,
                                                                        scripted_gate):
    out = tmp_path / "run"
    train(anneal_cfg(), out, **QUIET)
    checks = read_jsonl(out / "gridness.jsonl")
    assert [c["step"] for c in checks] == [5, 10, 15]
    assert [c["grid_fraction"] for c in checks] == [0.0, 0.5, 0.5]
    assert [c["switch"] for c in checks] == [False, True, False]  # only the first opens
    assert [c["stage"] for c in checks] == [1, 1, 2]
    metrics = read_jsonl(out / "metrics.jsonl")
    assert metrics[-1]["step"] == 17
    lrs = {r["step"]: r["lr"] for r in metrics}
    assert lrs[10] == 1e-2 and lrs[15] == 1e-3  # tiny's lr, then anneal_lr
    last = load_checkpoint(out / "checkpoints/latest.npz")
    assert last["step"] == 17
    # the reading at 15 is at the threshold again: it confirms the lattice
    assert last["schedule"] == {"stage": 2, "switch_step": 10, "confirmed": True,
                                "gave_up_step": None, "confirmed_step": 15}
    assert [c["confirmed"] for c in checks] == [False, False, True]
    assert not any(c["gave_up"] for c in checks)
    assert last["opt_state"]["t"] == 7  # AdamW's step count restarted at the switch
    again = train(anneal_cfg(), out, resume=out, **QUIET)  # a finished run stays finished
    assert load_checkpoint(out)["step"] == 17 and params_equal(again, last["params"])
    before = load_checkpoint(out / "checkpoints/step_5.npz")
    assert before["schedule"] == {"stage": 1, "switch_step": None, "confirmed": False,
                                  "gave_up_step": None, "confirmed_step": None}


@pytest.mark.parametrize("half_life", [0, 3])
def test_switch_equals_a_hand_made_restart(tmp_path, scripted_gate, half_life):
    """Independent of the loop: 10 steps, then fresh AdamW moments and plateau at
    anneal_lr, same data stream, 7 more steps by hand (lr halving every half_life)."""
    cfg = anneal_cfg(anneal_half_life=half_life)
    annealed = train(cfg, tmp_path / "run", **QUIET)
    plain = replace(cfg, optim={"anneal_lr": 0.0, "anneal_half_life": 0}, train={"steps": 10})
    train(plain, tmp_path / "plain", **QUIET)
    state = load_checkpoint(tmp_path / "plain/checkpoints/latest.npz")
    rng = np.random.Generator(np.random.PCG64())
    rng.bit_generator.state = state["rng_state"]
    params, opt, plateau = state["params"], adamw_init(state["params"]), plateau_init(1e-3)
    for step in range(11, 18):
        scale = 0.5 ** ((step - 10) / half_life) if half_life else 1.0
        params, opt, plateau, values = train_step(params, opt, plateau, rng, plain, step,
                                                  scale)
    assert params_equal(params, annealed)
    lr17 = read_jsonl(tmp_path / "run/metrics.jsonl")[-1]["lr"]
    assert lr17 == values["lr"] == pytest.approx(1e-3 * (0.5 ** (7 / 3) if half_life else 1))


@pytest.mark.parametrize("stop_at", [8, 10, 15])
def test_resume_before_at_or_after_the_switch_equals_an_uninterrupted_run(
        tmp_path, monkeypatch, stop_at):
    def gate(params, cfg, arena_size=2.0, n_walks=100, seed=0, n_steps=400):
        # depends on the parameters only, so resumed runs see the same readings
        return (0.5 if abs(params["g0_raw"]).sum() > gate.level else 0.0), 0.1

    monkeypatch.setattr(sicref.evaluate, "grid_check", gate)
    gate.level = np.inf
    cfg = anneal_cfg()
    probe = train(replace(cfg, optim={"anneal_lr": 0.0}, train={"steps": 10}),
                  tmp_path / "probe", **QUIET)
    gate.level = abs(probe["g0_raw"]).sum() - 1e-12  # opens at step 10
    start = load_checkpoint(tmp_path / "probe/checkpoints/step_5.npz")["params"]
    assert abs(start["g0_raw"]).sum() < gate.level, "gate must stay shut at step 5"
    full = train(cfg, tmp_path / "full", **QUIET)
    assert load_checkpoint(tmp_path / "full")["schedule"]["switch_step"] == 10
    train(replace(cfg, train={"steps": stop_at}), tmp_path / "part", **QUIET)
    resumed = train(cfg, tmp_path / "part", resume=tmp_path / "part", **QUIET)
    assert params_equal(full, resumed)
    def readings(run):
        return [(r["step"], r["grid_fraction"]) for r in read_jsonl(run / "gridness.jsonl")]

    assert readings(tmp_path / "part") == readings(tmp_path / "full")
    assert [r[0] for r in readings(tmp_path / "full")] == [5, 10, 15]
    assert readings(tmp_path / "full")[:2] == [(5, 0.0), (10, 0.5)]


def test_gate_that_never_opens_trains_to_train_steps(tmp_path, monkeypatch):
    monkeypatch.setattr(sicref.evaluate, "grid_check", lambda *a, **k: (0.0, np.nan))
    out = tmp_path / "run"
    train(anneal_cfg(steps=23), out, **QUIET)
    assert [c["step"] for c in read_jsonl(out / "gridness.jsonl")] == [5, 10, 15, 20]
    assert not any(c["switch"] for c in read_jsonl(out / "gridness.jsonl"))
    last = load_checkpoint(out)
    assert last["step"] == 23 and last["schedule"]["stage"] == 1
    assert read_jsonl(out / "metrics.jsonl")[-1]["lr"] == 1e-2


def test_annealing_off_writes_no_checks(tmp_path):
    out = tmp_path / "run"
    train(replace(preset("tiny"), train={"steps": 10}), out, **QUIET)
    assert not (out / "gridness.jsonl").exists()


def test_invalid_schedule_in_a_checkpoint_is_refused(tmp_path):
    out = tmp_path / "run"
    train(replace(preset("tiny"), train={"steps": 10}), out, **QUIET)
    path = out / "checkpoints/latest.npz"
    arrays = read_npz(path)
    meta = json.loads(str(arrays["meta"][()]))
    for bad in ({"stage": 3, "switch_step": None}, {"stage": 2, "switch_step": None},
                {"stage": 2, "switch_step": 11}, {"stage": 1, "switch_step": 4}, "x",
                {"stage": 1, "switch_step": None, "confirmed": True},
                {"stage": 2, "switch_step": 5, "confirmed": "yes"},
                {"stage": 2, "switch_step": 5, "gave_up_step": 11},
                {"stage": 1, "switch_step": None, "gave_up_step": 0},
                {"stage": 1, "switch_step": None, "gave_up_step": True},
                {"stage": 2, "switch_step": 5, "confirmed": False, "confirmed_step": 8},
                {"stage": 2, "switch_step": 5, "confirmed": True, "confirmed_step": 5},
                {"stage": 2, "switch_step": 5, "confirmed": True, "confirmed_step": 11},
                {"stage": 1, "switch_step": None, "confirmed_step": 4}):
        meta["schedule"] = bad
        arrays["meta"] = np.array(json.dumps(meta))
        atomic_savez(path, arrays)
        with pytest.raises(CheckpointError, match="meta.schedule"):
            load_checkpoint(path)
    del meta["schedule"]  # written before annealing existed: stage 1
    arrays["meta"] = np.array(json.dumps(meta))
    atomic_savez(path, arrays)
    assert load_checkpoint(path)["schedule"] == {"stage": 1, "switch_step": None,
                                                 "confirmed": False, "gave_up_step": None,
                                                 "confirmed_step": None}
    meta["schedule"] = {"stage": 2, "switch_step": 5}  # before confirm/give-up existed
    arrays["meta"] = np.array(json.dumps(meta))
    atomic_savez(path, arrays)
    assert load_checkpoint(path)["schedule"] == {"stage": 2, "switch_step": 5,
                                                 "confirmed": False, "gave_up_step": None,
                                                 "confirmed_step": None}
    # confirmed before confirmed_step existed: read as confirmed, step unknown
    meta["schedule"] = {"stage": 2, "switch_step": 5, "confirmed": True}
    arrays["meta"] = np.array(json.dumps(meta))
    atomic_savez(path, arrays)
    assert load_checkpoint(path)["schedule"]["confirmed_step"] is None


def test_grid_check_is_seeded_and_bounded():
    cfg = preset("tiny")
    from sicref.model import init_params

    params = init_params(np.random.default_rng(0), cfg.model.n_units, cfg.model.hidden)
    a = grid_check(params, cfg, n_walks=10)
    b = grid_check(params, cfg, n_walks=10)
    assert a == b or (a[0] == b[0] and np.isnan(a[1]) and np.isnan(b[1]))
    assert 0.0 <= a[0] <= 1.0


def test_loss_figure_shows_the_gate(tmp_path, scripted_gate):
    """One more panel (of equal width) when the run has gate readings."""
    import struct

    from sicref.plots import loss_curves

    def png_width(path):
        return struct.unpack(">I", path.read_bytes()[16:20])[0]

    out = tmp_path / "run"
    train(anneal_cfg(), out, **QUIET)
    loss_curves(str(out / "metrics.jsonl"), str(tmp_path), "with_gate.png")
    (out / "gridness.jsonl").unlink()
    loss_curves(str(out / "metrics.jsonl"), str(tmp_path), "without.png")
    ratio = png_width(tmp_path / "with_gate.png") / png_width(tmp_path / "without.png")
    assert ratio == pytest.approx(7 / 6, rel=0.02)


def test_main_job_reports_what_the_gate_did(tmp_path):
    from sicref.run import gate_lines

    cfg = anneal_cfg()
    assert gate_lines(tmp_path, replace(cfg, optim={"anneal_lr": 0.0})) == []
    assert "no gate reading" in gate_lines(tmp_path, cfg)[0]
    rows = [{"step": 5, "grid_fraction": 0.1}, {"step": 10, "grid_fraction": 0.2}]
    (tmp_path / "gridness.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert "never opened in 2 readings (best 20% at step 10" in gate_lines(tmp_path, cfg)[0]
    rows.append({"step": 15, "grid_fraction": 0.4, "switch": True})
    (tmp_path / "gridness.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert "opened at step 15 (grid fraction 40%" in gate_lines(tmp_path, cfg)[0]


def scripted(monkeypatch, fractions):
    """grid_check returns fractions[k] at its k-th call (the gate's readings)."""
    calls = []

    def fake(params, cfg, arena_size=2.0, n_walks=100, seed=0, n_steps=400):
        calls.append(1)
        return fractions[len(calls) - 1], 0.1

    monkeypatch.setattr(sicref.evaluate, "grid_check", fake)


def test_no_switch_by_give_up_step_ends_the_run_there(tmp_path, monkeypatch):
    scripted(monkeypatch, [0.0, 0.1, 0.2, 0.9])  # would open at 20: too late
    out = tmp_path / "run"
    train(anneal_cfg(anneal_give_up=15), out, **QUIET)
    checks = read_jsonl(out / "gridness.jsonl")
    assert [(c["step"], c["gave_up"]) for c in checks] == [(5, False), (10, False),
                                                           (15, True)]
    last = load_checkpoint(out)
    assert last["step"] == 15 and read_jsonl(out / "metrics.jsonl")[-1]["step"] == 15
    assert last["schedule"]["gave_up_step"] == 15 and last["schedule"]["stage"] == 1
    train(anneal_cfg(anneal_give_up=15), out, resume=out, **QUIET)  # stays ended
    assert load_checkpoint(out)["step"] == 15


def test_a_switch_at_the_give_up_step_is_not_a_give_up(tmp_path, monkeypatch):
    scripted(monkeypatch, [0.0, 0.0, 0.5, 0.5, 0.5])
    out = tmp_path / "run"
    train(anneal_cfg(anneal_give_up=15), out, **QUIET)
    last = load_checkpoint(out)
    assert last["step"] == 22 and last["schedule"]["switch_step"] == 15  # 15 + 7
    assert last["schedule"]["gave_up_step"] is None


@pytest.mark.parametrize("readings, end, confirmed", [
    ([0.5, 0.0, 0.0], 15, False),       # opened at 5, gone at 10 and 15: give up at 15
    ([0.5, 0.0, 0.4, 0.0], 17, True),   # back at 15 (the 2nd reading): runs to 5 + 12
    ([0.5, 0.3, 0.0], 17, True),        # the threshold itself counts
])
def test_a_lattice_not_seen_again_after_the_switch_ends_the_run(
        tmp_path, monkeypatch, readings, end, confirmed):
    scripted(monkeypatch, readings + [0.0] * 5)
    cfg = anneal_cfg(anneal_confirm=2, anneal_steps=12)
    out = tmp_path / "run"
    train(cfg, out, **QUIET)
    last = load_checkpoint(out)
    assert last["step"] == end
    assert last["schedule"]["confirmed"] is confirmed
    assert last["schedule"]["gave_up_step"] == (None if confirmed else end)
    assert read_jsonl(out / "gridness.jsonl")[-1]["gave_up"] is (not confirmed)


def test_resume_across_a_give_up_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    def gate(params, cfg, arena_size=2.0, n_walks=100, seed=0, n_steps=400):
        return 0.0, 0.1  # never opens

    monkeypatch.setattr(sicref.evaluate, "grid_check", gate)
    cfg = anneal_cfg(anneal_give_up=15)
    full = train(cfg, tmp_path / "full", **QUIET)
    train(replace(cfg, train={"steps": 12}), tmp_path / "part", **QUIET)
    resumed = train(cfg, tmp_path / "part", resume=tmp_path / "part", **QUIET)
    assert params_equal(full, resumed)
    assert load_checkpoint(tmp_path / "part")["schedule"]["gave_up_step"] == 15


def test_progress_eta_counts_to_the_give_up_step():
    from sicref.train import PARTS, progress_line

    values = {"total": 0.1, "lr": 1e-3, **{k: 0.0 for k in PARTS}}
    plain = progress_line(1000, 10000, values, 10.0)
    assert plain.endswith("ETA 0:15:00")
    gated = progress_line(1000, 10000, values, 10.0, give_up=5000)
    assert "ETA 0:06:40 (to step 5000" in gated
    assert progress_line(6000, 10000, values, 10.0, give_up=5000) == progress_line(
        6000, 10000, values, 10.0)


def test_readings_start_at_check_from(tmp_path, monkeypatch):
    scripted(monkeypatch, [0.0, 0.0, 0.0])
    out = tmp_path / "run"
    train(anneal_cfg(steps=30, anneal_check_from=12, anneal_give_up=20), out, **QUIET)
    assert [c["step"] for c in read_jsonl(out / "gridness.jsonl")] == [15, 20]
    assert load_checkpoint(out)["step"] == 20


def replay_example():
    """examples/replay_gate_from.py as a module."""
    import importlib.util

    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "replay_gate_from", Path(__file__).resolve().parents[1] / "examples/replay_gate_from.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    return example


def test_replaying_a_run_with_an_earlier_gate_equals_training_with_it(tmp_path, monkeypatch):
    # examples/replay_gate_from.py: a run that read from step 15 and gave up, replayed
    # from its step-5 checkpoint with readings from step 10, is the run trained with
    # readings from step 10 from the start
    example = replay_example()

    kw = dict(steps=40, anneal_give_up=20, anneal_confirm=2)
    scripted(monkeypatch, [0.5, 0.5, 0.5])
    direct = train(anneal_cfg(anneal_check_from=10, **kw), tmp_path / "direct", **QUIET)
    scripted(monkeypatch, [0.0, 0.0])
    train(anneal_cfg(anneal_check_from=15, **kw), tmp_path / "late", **QUIET)
    assert load_checkpoint(tmp_path / "late")["schedule"]["gave_up_step"] == 20
    scripted(monkeypatch, [0.5, 0.5, 0.5])
    replayed = example.replay(str(tmp_path / "late"), str(tmp_path / "replay"), 5, 10,
                              log=QUIET["log"])
    assert params_equal(direct, replayed)
    def timeless(name, path):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in read_jsonl(path / name)]

    for name in ("gridness.jsonl", "metrics.jsonl"):
        assert timeless(name, tmp_path / "direct") == timeless(name, tmp_path / "replay")
    readings = timeless("gridness.jsonl", tmp_path / "replay")
    assert [r["step"] for r in readings] == [10, 15] and readings[0]["switch"]
    with pytest.raises(ValueError, match="exists"):
        example.replay(str(tmp_path / "late"), str(tmp_path / "replay"), 5, 10)
    with pytest.raises(ValueError, match="must be after"):
        example.replay(str(tmp_path / "late"), str(tmp_path / "other"), 5, 5)


def test_replaying_with_another_annealing_lr_equals_training_with_it(tmp_path, monkeypatch):
    # examples/replay_gate_from.py --set: the same run with anneal_lr changed, replayed
    # from a checkpoint before the gate opened, is the run trained with that anneal_lr
    example = replay_example()

    kw = dict(steps=40, anneal_give_up=20, anneal_confirm=2, anneal_check_from=10)
    scripted(monkeypatch, [0.5, 0.5, 0.5])
    direct = train(anneal_cfg(anneal_lr=3e-5, **kw), tmp_path / "direct", **QUIET)
    scripted(monkeypatch, [0.5, 0.5, 0.5])
    original = train(anneal_cfg(**kw), tmp_path / "original", **QUIET)
    assert not params_equal(direct, original)
    scripted(monkeypatch, [0.5, 0.5, 0.5])
    replayed = example.replay(str(tmp_path / "original"), str(tmp_path / "replay"), 5, 10,
                              log=QUIET["log"], sets=["optim.anneal_lr=3e-5"])
    assert params_equal(direct, replayed)
    assert load_checkpoint(tmp_path / "replay")["config"].optim.anneal_lr == 3e-5
    with pytest.raises(ValueError, match="unknown config field"):
        example.replay(str(tmp_path / "original"), str(tmp_path / "bad"), 5, 10,
                       sets=["optim.anneal_rate=3e-5"])
    with pytest.raises(ValueError, match="one value"):
        example.replay(str(tmp_path / "original"), str(tmp_path / "bad2"), 5, 10,
                       sets=["optim.anneal_lr=3e-5,1e-5"])


def test_the_gate_reads_with_its_walk_count_and_length(tmp_path, monkeypatch):
    seen = []

    def fake(params, cfg, arena_size=2.0, n_walks=100, seed=0, n_steps=400):
        seen.append((n_walks, n_steps))
        return 0.0, 0.1

    monkeypatch.setattr(sicref.evaluate, "grid_check", fake)
    train(anneal_cfg(steps=10, anneal_walks=7, anneal_walk_steps=33), tmp_path / "run",
          **QUIET)
    assert seen == [(7, 33), (7, 33)]


def test_grid_check_walks_have_the_length_asked_for():
    from sicref.evaluate import WalkConfig, analyse_arena
    from sicref.model import init_params

    cfg = preset("tiny")
    params = init_params(np.random.default_rng(3), cfg.model.n_units, cfg.model.hidden)
    for n_steps in (50, 120):
        summary, _ = analyse_arena(params, cfg, 2.0, np.random.default_rng(0),
                                   walk=WalkConfig(n_walks=6, n_steps=n_steps))
        got = grid_check(params, cfg, n_walks=6, n_steps=n_steps)
        assert got[0] == summary["grid_fraction"]
        assert got[1] == summary["median_score60_active"] or (
            np.isnan(got[1]) and np.isnan(summary["median_score60_active"]))


def test_progress_of_a_chunk_counts_to_the_last_step():
    from sicref.train import PARTS, progress_line

    values = {"total": 0.1, "lr": 1e-3, **{k: 0.0 for k in PARTS}}
    chunk = progress_line(1500, 2000, values, 10.0, last_step=10000)
    # (10000 - 1500) / 10 steps/s = 850 s
    assert chunk.startswith("step 1500/10000 |")
    assert "ETA 0:14:10 (at most; this part ends at step 2000)" in chunk
    # the last chunk is a plain run
    assert progress_line(9500, 10000, values, 10.0, last_step=10000) == progress_line(
        9500, 10000, values, 10.0)


def test_end_at_confirm_stops_at_the_confirming_reading(tmp_path, monkeypatch):
    # the gate opens at 10 and the reading at 20 (the second after it) confirms: with
    # anneal_end_at_confirm the run ends there, and its checkpoints up to there are the
    # run without it, bit for bit; without it the run goes on to switch + anneal_steps
    kw = dict(steps=60, anneal_steps=30, anneal_confirm=2)
    scripted(monkeypatch, [0.0, 0.5, 0.1, 0.5, 0.5, 0.5, 0.5, 0.5])
    train(anneal_cfg(**kw), tmp_path / "full", **QUIET)
    scripted(monkeypatch, [0.0, 0.5, 0.1, 0.5, 0.5, 0.5, 0.5, 0.5])
    cfg = anneal_cfg(anneal_end_at_confirm=True, **kw)
    train(cfg, tmp_path / "short", **QUIET)
    full, short = (load_checkpoint(tmp_path / d) for d in ("full", "short"))
    assert full["step"] == 40 and short["step"] == 20
    assert short["schedule"] == {"stage": 2, "switch_step": 10, "confirmed": True,
                                 "gave_up_step": None, "confirmed_step": 20}
    at_20 = load_checkpoint(tmp_path / "full" / "checkpoints" / "step_20.npz")
    assert params_equal(short["params"], at_20["params"])
    assert [c["step"] for c in read_jsonl(tmp_path / "short" / "gridness.jsonl")] == [
        5, 10, 15, 20]
    assert run_ended(str(tmp_path / "short"), cfg)
    scripted(monkeypatch, [])  # an ended run reads nothing more
    again = train(cfg, tmp_path / "short", resume=tmp_path / "short", **QUIET)
    assert params_equal(again, short["params"])
    assert load_checkpoint(tmp_path / "short")["step"] == 20


def test_end_at_confirm_does_not_shorten_a_run_that_gives_up(tmp_path, monkeypatch):
    kw = dict(steps=60, anneal_steps=30, anneal_confirm=2, anneal_end_at_confirm=True)
    scripted(monkeypatch, [0.0, 0.5, 0.1, 0.1])  # opened at 10, not confirmed: gives up
    train(anneal_cfg(**kw), tmp_path / "run", **QUIET)
    last = load_checkpoint(tmp_path / "run")
    assert last["step"] == 20 and last["schedule"]["gave_up_step"] == 20
    assert last["schedule"]["confirmed_step"] is None


def test_end_at_confirm_needs_confirming_readings():
    from sicref.config import ConfigError

    with pytest.raises(ConfigError, match="optim.anneal_end_at_confirm"):
        anneal_cfg(anneal_end_at_confirm=True, anneal_confirm=0)
    with pytest.raises(ConfigError, match="optim.anneal_end_at_confirm"):
        anneal_cfg(anneal_end_at_confirm=1, anneal_confirm=2)
