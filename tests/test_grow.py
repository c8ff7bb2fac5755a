"""The main job's second stage (sicref.grow): free the units outside the caught
lattice's modules, train on at T = 30."""

import json

import numpy as np
import pytest

import sicref.evaluate
from sicref.checkpoint import load_checkpoint
from sicref.config import preset, replace
from sicref.grow import (GROW_LR, GROW_SEQ_LEN, free_units, grow, grow_config, keep_count,
                         pick_checkpoint, units_outside_modules, units_to_free)
from sicref.model import transition_matrices
from sicref.train import TrainingError, train

QUIET = lambda line: None
LABELS = [0, -1, 1, -1, 0, -1, -1, 0]  # tiny has 8 units; 1, 3, 5, 6 are in no module


def summary_for(step, labels=LABELS):
    return {"step": step, "arenas": {"2m": {"units": [
        {"unit": i, "module": m, "score60": 0.1 * i} for i, m in enumerate(labels)]}}}


@pytest.fixture
def source(tmp_path):
    run = tmp_path / "caught"
    train(replace(preset("tiny"), train={"steps": 10}), run, log=QUIET)
    return run


def test_units_outside_modules_reads_a_summary_dict_or_file(tmp_path):
    assert list(units_outside_modules(summary_for(7), 8, step=7)) == [1, 3, 5, 6]
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(summary_for(7)))
    assert list(units_outside_modules(str(path), 8)) == [1, 3, 5, 6]
    with pytest.raises(ValueError, match="evaluated step 7, the checkpoint is at step 9"):
        units_outside_modules(summary_for(7), 8, step=9)
    with pytest.raises(ValueError, match="has 8 units, the network 6"):
        units_outside_modules(summary_for(7), 6)
    with pytest.raises(ValueError, match="not an evaluation summary"):
        units_outside_modules({"step": 7}, 8)


def test_only_the_best_module_units_are_kept():
    # module units 0, 2, 4, 7 score 0.0, 0.2, 0.4, 0.7: keeping two keeps 4 and 7
    assert list(units_to_free(summary_for(7), 8, keep=2)) == [0, 1, 2, 3, 5, 6]
    assert list(units_to_free(summary_for(7), 8, keep=4)) == [1, 3, 5, 6]
    assert list(units_to_free(summary_for(7), 8, keep=0)) == list(range(8))
    with pytest.raises(ValueError, match="keep must be >= 0"):
        units_to_free(summary_for(7), 8, keep=-1)
    no_scores = {"step": 7, "arenas": {"2m": {"units": [
        {"unit": i, "module": m} for i, m in enumerate(LABELS)]}}}
    with pytest.raises(ValueError, match="not an evaluation summary.*score60"):
        units_to_free(no_scores, 8)


def test_the_stage_keeps_half_the_module_but_at_least_28_units():
    assert [keep_count(m) for m in (0, 10, 28, 40, 56, 57, 63, 87, 91)] == \
        [0, 10, 28, 28, 28, 28, 31, 43, 45]
    # 128 units, 87 of them in the module (every third unit outside), scores by unit
    labels = [-1 if i % 3 == 0 and i < 123 else 0 for i in range(128)]
    assert labels.count(0) == 87
    freed = units_to_free(summary_for(7, labels), 128)
    module = [i for i, m in enumerate(labels) if m == 0]
    assert sorted(set(range(128)) - set(freed)) == module[-43:]  # the 43 best scores
    small = [0 if i < 20 else -1 for i in range(128)]  # a module of 20: all kept
    assert list(units_to_free(summary_for(7, small), 128)) == list(range(20, 128))


def test_the_stage_frees_the_units_outside_the_modules_and_trains_at_T30(source, tmp_path):
    out = tmp_path / "grow"
    run_dir, layout = grow(str(source), summary_for(10), str(out), 6, seed=3, log=QUIET)
    assert layout["freed"] == [1, 3, 5, 6] and layout["source_step"] == 10
    src = load_checkpoint(str(source))
    start = load_checkpoint(str(out / "start.npz"))
    # the start is the source with exactly those units redrawn, from the stage's seed
    expected = free_units(src["params"], np.array([1, 3, 5, 6]), np.random.default_rng(3))
    assert all(np.array_equal(start["params"][k], expected[k]) for k in expected)
    v = np.random.default_rng(0).uniform(-0.15, 0.15, (5, 2))
    kept = [0, 2, 4, 7]
    W0, W1 = (transition_matrices(p, v)[:, kept][:, :, kept]
              for p in (src["params"], start["params"]))
    assert np.array_equal(W0, W1)
    cfg = load_checkpoint(run_dir)["config"]
    assert cfg.data.seq_len == GROW_SEQ_LEN and cfg.optim.lr == GROW_LR
    assert cfg.optim.anneal_lr == 0 and cfg.train.seed == 3 and cfg.train.steps == 6
    # everything but T, lr, the gate, steps, seed and checkpointing is the source's
    base = src["config"]
    assert (cfg.model, cfg.loss, cfg.data.batch_size) == (base.model, base.loss,
                                                          base.data.batch_size)
    assert load_checkpoint(run_dir)["step"] == 6


def test_the_stage_lengthens_the_lattices_trajectories_by_half():
    from sicref.grow import stage_seq_len

    laptop = preset("laptop")
    assert laptop.data.seq_len == 15 and stage_seq_len(laptop) == GROW_SEQ_LEN == 30
    # a redrawn try trains at T = 30, so its stage at 45
    assert stage_seq_len(replace(laptop, data={"seq_len": 30})) == 45
    assert grow_config(replace(laptop, data={"seq_len": 30}), 10, 0).data.seq_len == 45
    # short test presets still grow at GROW_SEQ_LEN
    assert stage_seq_len(replace(laptop, data={"seq_len": 4})) == GROW_SEQ_LEN


def test_a_source_without_a_module_has_every_unit_freed_and_says_so(source, tmp_path):
    lines = []
    _, layout = grow(str(source), summary_for(10, [-1] * 8), str(tmp_path / "g"), 2,
                     seed=0, log=lines.append)
    assert layout["freed"] == list(range(8))
    assert "no 2 m module, so every unit" in lines[0]


def test_a_stopped_stage_continues_to_the_same_network(source, tmp_path):
    whole, _ = grow(str(source), summary_for(10), str(tmp_path / "a"), 6, 1, log=QUIET)
    part, _ = grow(str(source), summary_for(10), str(tmp_path / "b"), 4, 1, log=QUIET)
    lines = []
    part, _ = grow(str(source), summary_for(10), str(tmp_path / "b"), 6, 1,
                   log=lines.append)
    assert lines[0].startswith("grow: continuing")
    a, b = load_checkpoint(whole)["params"], load_checkpoint(part)["params"]
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_a_stage_grown_from_something_else_is_refused(source, tmp_path):
    out = str(tmp_path / "grow")
    grow(str(source), summary_for(10), out, 4, seed=1, log=QUIET)
    with pytest.raises(TrainingError, match="seed 1, 4 units freed.*seed 2"):
        grow(str(source), summary_for(10), out, 4, seed=2, log=QUIET)
    other = summary_for(10, [0] * 7 + [-1])
    with pytest.raises(TrainingError, match="was grown from"):
        grow(str(source), other, out, 4, seed=1, log=QUIET)
    (tmp_path / "grow/freed.json").write_text("{not json")
    with pytest.raises(TrainingError, match="freed.json cannot be read"):
        grow(str(source), summary_for(10), out, 4, seed=1, log=QUIET)
    with pytest.raises(ValueError, match="evaluated step 9"):
        grow(str(source), summary_for(9), str(tmp_path / "new"), 4, seed=1, log=QUIET)


def test_the_checkpoint_with_the_most_modules_is_picked():
    def row(step, fraction, *sizes):
        return {"step": step, "grid_fraction": fraction,
                "modules": {"periods": [0.5 + 0.3 * i for i in range(len(sizes))],
                            "sizes": list(sizes)}}

    rows = [row(1000, 0.9, 100), row(2000, 0.93, 10, 90), row(3000, 0.85, 15, 81),
            row(4000, 0.88, 14, 80), row(5000, 0.95, 110)]
    assert pick_checkpoint(rows) == 3000  # two modules, the second one the largest
    assert pick_checkpoint(rows[:2] + rows[4:]) == 2000  # two modules beat 95 %
    pair = [row(1, 0.9, 12, 40), row(2, 0.9, 12, 50)]
    assert pick_checkpoint(pair) == 2  # the larger smallest module
    assert pick_checkpoint([row(1, 0.9, 50, 50), row(2, 0.8, 50, 50)]) == 1  # grid fraction
    assert pick_checkpoint([row(1, 0.5, 50, 50), row(2, 0.5, 50, 50)]) == 2  # then later
    # no reading with two modules: the last step, whatever the sizes or fractions
    assert pick_checkpoint([row(3000, 0.9, 100), row(1000, 0.95, 110), row(2000, 0.5, 60)]) == 3000
    assert pick_checkpoint([row(1, 0.1), row(2, 0.0)]) == 2  # no module at all
    with pytest.raises(ValueError, match="no checkpoint readings"):
        pick_checkpoint([])


def test_grow_config_changes_only_the_stage_settings():
    base = preset("laptop")
    cfg = grow_config(base, 6000, 7)
    assert cfg.data.seq_len == 30 and cfg.optim.lr == 1e-4 and cfg.optim.anneal_lr == 0
    assert (cfg.train.steps, cfg.train.seed, cfg.train.checkpoint_every) == (6000, 7, 1000)
    assert replace(cfg, data={"seq_len": 15},
                   optim={k: getattr(base.optim, k) for k in (
                       "lr", "anneal_lr", "anneal_half_life", "anneal_give_up",
                       "anneal_confirm", "anneal_check_from")},
                   train={"steps": 7500, "seed": 0, "checkpoint_every": 500}) == base


def catch_at_once(monkeypatch):
    """The main job on a tiny preset whose gate opens at the first reading (every
    reading 50 % grid units), tries in this process, stage checkpoints every step."""
    import sicref.run
    from test_tries import launch_in_process

    gated = replace(preset("tiny"), optim={
        "anneal_lr": 1e-3, "anneal_check_every": 5, "anneal_steps": 5, "anneal_walks": 4,
        "anneal_grid_fraction": 0.3}, train={"steps": 20, "checkpoint_every": 5})
    monkeypatch.setattr(sicref.run, "preset", lambda name: gated)
    monkeypatch.setattr(sicref.evaluate, "grid_check", lambda *a, **k: (0.5, 0.1))
    real = sicref.run.run_tries
    monkeypatch.setattr(sicref.run, "run_tries", lambda *a, **k: real(
        *a, **{**k, "launch": launch_in_process, "poll": 0.01}))
    monkeypatch.setattr(sicref.grow, "GROW_CHECKPOINT_EVERY", 1)


def test_main_job_with_a_caught_lattice_grows_and_evaluates(tmp_path, monkeypatch):
    import sicref.run

    catch_at_once(monkeypatch)
    picked = []
    monkeypatch.setattr(sicref.run, "pick_checkpoint", lambda rows: picked.append(
        [r["step"] for r in rows]) or 2)  # the stage evaluates the step it picks
    lines = []
    out = tmp_path / "main"
    summary = sicref.run.main_job("gated", str(out), tries=2, log=lines.append,
                                  grow_steps=3, grow_until=False, redraw=False)
    caught = json.loads((out / "evaluation/summary.json").read_text())
    freed = json.loads((out / "grow/freed.json").read_text())
    assert freed["freed"] == [r["unit"] for r in caught["arenas"]["2m"]["units"]
                              if r["module"] < 0]
    assert freed["source_step"] == caught["step"] == 10  # switch at 5, 5 more
    grown = json.loads((out / "grow/evaluation/summary.json").read_text())
    assert grown == json.loads(json.dumps(summary))
    assert picked == [[1, 2, 3]]
    assert grown["step"] == 2 and set(grown["arenas"]) == {"2m", "3m", "4m"}
    assert grown["checkpoint"] == str(out / "grow/run/checkpoints/step_2.npz")
    assert (grown["walk"]["n_walks"], grown["walk"]["n_steps"]) == (800, 100)
    over = json.loads((out / "grow/evaluation/over_training.json").read_text())
    assert [(r["step"], r["walk"]["n_walks"], r["walk"]["n_steps"]) for r in over] == [
        (1, 400, 100), (2, 400, 100), (3, 400, 100)]
    two = max(len(r["modules"]["sizes"]) for r in over) >= 2
    why = "most modules" if two else "the last; no reading has two modules"
    assert any(ln.startswith(f"grow: {len(freed['freed'])} units freed, trained to step 3 "
                             f"at T = 30; the last checkpoint reads ") and
               ln.endswith(f"; step 2 ({why}) evaluated with 800 walks of 100 steps:")
               for ln in lines)
    assert lines[-1].startswith("main job:") and "grow/evaluation" in lines[-1]
    # called again, the finished job evaluates and reads nothing anew
    import sicref.evaluate

    def no(*a, **k):
        raise AssertionError("evaluated again")

    monkeypatch.setattr(sicref.evaluate, "evaluate", no)
    monkeypatch.setattr(sicref.evaluate, "analyse_arena", no)
    lines.clear()
    again = sicref.run.main_job("gated", str(out), tries=2, log=lines.append,
                                grow_steps=3, grow_until=False, redraw=False)
    assert again == grown
    assert sum("not evaluated again" in ln for ln in lines) == 2
    read_before = len(json.loads((out / "evaluation/over_training.json").read_text()))
    assert sum(ln.endswith("(read before)") for ln in lines) == read_before + 3


def test_main_job_keeps_the_try_when_the_stage_loses_its_modules(tmp_path, monkeypatch):
    import sicref.run

    catch_at_once(monkeypatch)
    real = sicref.run.evaluate_run

    def evaluate_run(source, out, *a, **k):  # the try reads one module, the stage none
        summary = real(source, out, *a, **k)
        periods = [] if "grow" in out else [0.8]
        summary["arenas"]["2m"]["modules"]["periods"] = periods
        return summary

    monkeypatch.setattr(sicref.run, "evaluate_run", evaluate_run)
    lines = []
    out = tmp_path / "main"
    summary = sicref.run.main_job("gated", str(out), tries=2, log=lines.append,
                                  grow_steps=2, grow_until=False, redraw=False)
    assert summary["arenas"]["2m"]["modules"]["periods"] == [0.8]
    assert summary["checkpoint"].startswith(str(out / "tries"))
    where = str(out / "evaluation")
    assert (f"grow: the stage ended with fewer 2 m modules (0) than the try (1); the "
            f"job's result stays the try's evaluation, {where}") in lines
    assert lines[-1].endswith(f"figures and summary.json in {where}")
    assert (out / "grow/evaluation/summary.json").exists()  # still there to look at


def test_main_job_refuses_bad_grow_settings_before_any_work(tmp_path):
    from sicref.run import main_job

    with pytest.raises(ValueError, match="--grow-steps must be >= 0"):
        main_job("tiny", str(tmp_path / "other"), log=QUIET, grow_steps=-1)
    with pytest.raises(ValueError, match="--grow-until-two needs --grow-steps N > 0"):
        main_job("tiny", str(tmp_path / "other"), log=QUIET, grow_steps=0,
                 grow_until=True)
    assert not (tmp_path / "other").exists()


def sized(step, *sizes):
    return {"step": step, "grid_fraction": 0.5, "hexagonal_fraction": 0.5,
            "median_score60_active": 0.4, "n_active": 60,
            "modules": {"periods": [0.5 + 0.3 * i for i in range(len(sizes))],
                        "sizes": list(sizes)}}


def test_two_modules_held_needs_the_last_readings_all_with_two():
    from sicref.grow import two_modules_held

    one, two = sized(1, 50), sized(2, 10, 40)
    assert not two_modules_held([])
    assert not two_modules_held([two])  # one reading is not confirmed
    assert two_modules_held([one, two, two])
    assert not two_modules_held([two, one, two])  # the last two, in a row
    assert not two_modules_held([two, two, one])
    assert two_modules_held([one, two], confirm=1)
    assert two_modules_held([one, sized(3, 5, 10, 40), two])  # three count as two
    with pytest.raises(ValueError, match="confirm must be >= 1"):
        two_modules_held([two], confirm=0)


def test_growing_until_two_stops_at_the_second_reading_with_two(source, tmp_path,
                                                                monkeypatch):
    from sicref.grow import grow_until_two

    monkeypatch.setattr(sicref.grow, "GROW_CHECKPOINT_EVERY", 2)
    sizes = {2: [30], 4: [8, 20], 6: [30], 8: [9, 21], 10: [10, 20], 12: [10, 20]}
    read = []

    def reader(path):
        step = load_checkpoint(path)["step"]
        read.append(step)
        return sized(step, *sizes[step])

    out = tmp_path / "until"
    lines = []
    run_dir, layout, rows, early = grow_until_two(str(source), summary_for(10), str(out),
                                                  13, 1, reader, log=lines.append)
    assert early and read == [2, 4, 6, 8, 10] and [r["step"] for r in rows] == read
    assert layout["freed"] == [1, 3, 5, 6]
    assert load_checkpoint(run_dir)["step"] == 10  # nothing trained past the stop
    assert sum(ln.startswith("grow: training to step") for ln in lines) == 5
    # every chunk's progress lines count to the stage's last step, 13
    progress = [ln for ln in lines if ln.startswith("step ")]
    assert progress and all(ln.split(" |")[0].endswith("/13") for ln in progress)
    # the same network as the stage trained in one go (whose steps go past the stop)
    whole, _ = grow(str(source), summary_for(10), str(tmp_path / "whole"), 13, 1,
                    log=QUIET)
    a = load_checkpoint(str(tmp_path / "whole/run/checkpoints/step_10.npz"))["params"]
    b = load_checkpoint(run_dir)["params"]
    assert all(np.array_equal(a[k], b[k]) for k in a)
    # called again: the checkpoints are read, nothing is retrained
    lines.clear()
    read.clear()
    again = grow_until_two(str(source), summary_for(10), str(out), 13, 1, reader,
                           log=lines.append)
    assert again[3] and read == [2, 4, 6, 8, 10] and lines == []
    # never two readings in a row with two modules: every step, the last one 13
    sizes = {k: [30] if k % 4 else [5, 25] for k in (2, 4, 6, 8, 10, 12, 13)}
    read.clear()
    _, _, rows, early = grow_until_two(str(source), summary_for(10),
                                       str(tmp_path / "never"), 13, 1, reader, log=QUIET)
    assert not early and read == [2, 4, 6, 8, 10, 12, 13]
    # another seed in the same directory is refused before any training
    with pytest.raises(TrainingError, match="was grown from"):
        grow_until_two(str(source), summary_for(10), str(out), 13, 2, reader, log=QUIET)


def test_main_job_grown_until_two_stops_and_picks_among_the_readings(tmp_path,
                                                                     monkeypatch):
    import sicref.run

    catch_at_once(monkeypatch)
    fake = {1: [40], 2: [12, 30], 3: [15, 30], 4: [20, 30]}
    monkeypatch.setattr(sicref.run, "checkpoint_reading", lambda path, *a, **k: sized(
        load_checkpoint(path)["step"], *fake[load_checkpoint(path)["step"]]))
    lines = []
    out = tmp_path / "main"
    summary = sicref.run.main_job("gated", str(out), tries=2, log=lines.append,
                                  grow_steps=6, grow_until=True, grow_lanes=1,
                                  redraw=False)
    over = json.loads((out / "grow/evaluation/over_training.json").read_text())
    assert [r["step"] for r in over] == [1, 2, 3]
    assert not (out / "grow/run/checkpoints/step_4.npz").exists()
    assert summary["step"] == 3  # the larger smallest module of the readings so far
    assert any("stopped at step 3 of at most 6, 2 readings in a row with two modules; "
               in ln and ln.endswith("step 3 (most modules) evaluated with 800 walks "
                                     "of 100 steps:") for ln in lines)


def test_the_redraw_example_configs_are_the_stages_with_and_without_a_gate():
    """examples/configs/redraw_T30*.json (docs/experiments.md, "Redrawing the recurrent
    layer of a try that gave up") are the stage's settings for the laptop preset."""
    import os
    from sicref.config import load_config
    here = os.path.join(os.path.dirname(__file__), "..", "examples", "configs")
    stage = grow_config(preset("laptop"), 4000, 0)
    assert load_config(os.path.join(here, "redraw_T30.json")) == stage
    gated = load_config(os.path.join(here, "redraw_T30_gate.json"))
    assert replace(gated, optim={k: getattr(stage.optim, k) for k in vars(stage.optim)
                                 if k.startswith("anneal")},
                   train={"steps": 4000, "checkpoint_every": 1000}) == stage
    assert gated.optim.anneal_lr == GROW_LR / 10 and gated.optim.anneal_give_up == 4000
    # `sicref run --redraw` trains a redrawn try with the gated one at T = 45
    # (redraw_T45_gate.json, the experiments' runs), but giving up at 3000 instead of
    # 4000 and ending at the confirming reading (at most 1000 steps after its switch)
    from sicref.grow import redraw_config, rescale_config
    t45 = load_config(os.path.join(here, "redraw_T45_gate.json"))
    assert redraw_config(preset("laptop")) == replace(
        t45, optim={"anneal_steps": 1000, "anneal_give_up": 3000,
                    "anneal_end_at_confirm": True}, train={"steps": 4000})
    assert t45 == replace(gated, data={"seq_len": 45})
    # and rescales its lattice with the T = 30 one, 1000 steps, the try's seed
    laptop = replace(preset("laptop"), train={"seed": 2013})
    assert rescale_config(laptop) == replace(stage, train={"steps": 1000, "seed": 2013})


def test_the_variant_example_configs_change_only_what_their_names_say():
    """examples/configs/{laptop_B16,laptop_T20,redraw_T15_gate,redraw_T45_gate}.json
    (docs/experiments.md, "Half the batch", "Fresh tries at T = 20", "Redrawn at
    T = 15", "Redrawn at T = 45") differ from the preset or the redrawn try's config in
    the fields the docs name and nowhere else."""
    import os
    from sicref.config import load_config
    here = os.path.join(os.path.dirname(__file__), "..", "examples", "configs")
    laptop = preset("laptop")
    assert load_config(os.path.join(here, "laptop_B16.json")) == replace(
        laptop, data={"batch_size": 16},
        optim={"anneal_check_from": 1500, "anneal_give_up": 6000}, train={"steps": 9000})
    assert load_config(os.path.join(here, "laptop_T20.json")) == replace(
        laptop, data={"seq_len": 20})
    gated = load_config(os.path.join(here, "redraw_T30_gate.json"))
    for t in (15, 45):
        assert load_config(os.path.join(here, f"redraw_T{t}_gate.json")) == replace(
            gated, data={"seq_len": t})


def test_the_rescale_starts_from_the_confirmed_lattice_or_says_why_not(tmp_path):
    from sicref.grow import rescale_source

    run = tmp_path / "redrawn"
    (run / "checkpoints").mkdir(parents=True)
    cfg = replace(preset("tiny"), optim={"anneal_lr": 1e-3, "anneal_confirm": 2})

    def readings(*rows):
        (run / "gridness.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    opened = {"step": 5, "switch": True, "confirmed": False}
    readings(opened, {"step": 10, "switch": False, "confirmed": False})
    with pytest.raises(TrainingError, match="no gate reading confirmed a lattice"):
        rescale_source(str(run), cfg)
    readings(opened, {"step": 10, "switch": False, "confirmed": True})
    with pytest.raises(TrainingError, match="confirmed at step 10, but .*step_10.npz is "
                                            "missing"):
        rescale_source(str(run), cfg)
    for step in (5, 10):
        (run / f"checkpoints/step_{step}.npz").write_bytes(b"")
    assert rescale_source(str(run), cfg) == str(run / "checkpoints/step_10.npz")
    # a gate without confirming readings: the switch's checkpoint
    no_confirm = replace(cfg, optim={"anneal_confirm": 0})
    assert rescale_source(str(run), no_confirm) == str(run / "checkpoints/step_5.npz")


def test_an_interrupted_rescale_continues_to_the_same_result(tmp_path, monkeypatch):
    import sicref.grow
    from sicref.grow import rescale

    monkeypatch.setattr(sicref.grow, "GROW_CHECKPOINT_EVERY", 1)
    try_cfg = replace(preset("tiny"), train={"seed": 3})
    redrawn = tmp_path / "redrawn"
    train(replace(try_cfg, data={"seq_len": 8}, train={"steps": 4, "checkpoint_every": 2}),
          str(redrawn), log=lambda line: None)
    (redrawn / "gridness.jsonl").write_text(json.dumps({"step": 2, "switch": True}) + "\n")
    monkeypatch.setattr(sicref.grow, "RESCALE_STEPS", 3)
    whole = load_checkpoint(rescale(str(redrawn), try_cfg, str(tmp_path / "whole"),
                                    log=lambda line: None))
    lines = []
    monkeypatch.setattr(sicref.grow, "RESCALE_STEPS", 1)  # stopped after one step
    rescale(str(redrawn), try_cfg, str(tmp_path / "parts"), log=lines.append)
    monkeypatch.setattr(sicref.grow, "RESCALE_STEPS", 3)
    rescale(str(redrawn), try_cfg, str(tmp_path / "parts"), log=lines.append)
    parts = load_checkpoint(str(tmp_path / "parts"))
    assert any(ln.startswith("rescale: continuing") for ln in lines)
    assert parts["step"] == whole["step"] == 3
    assert parts["config"].data.seq_len == sicref.grow.GROW_SEQ_LEN
    for k in whole["params"]:
        assert (parts["params"][k] == whole["params"][k]).all(), k
    # it started from the switch's checkpoint (step 2), not the run's last (4)
    start = load_checkpoint(str(redrawn / "checkpoints/step_2.npz"))["params"]
    again = train(parts["config"], str(tmp_path / "again"),
                  init_from=str(redrawn / "checkpoints/step_2.npz"), log=lambda line: None)
    assert all((again[k] == whole["params"][k]).all() for k in again)
    assert any((start[k] != whole["params"][k]).any() for k in start)


def test_rescale_readings_are_the_confirming_one_and_the_gates_reading_of_the_rescale(
        tmp_path, monkeypatch):
    import sicref.evaluate
    from sicref.grow import rescale_readings

    cfg = replace(preset("tiny"), optim={"anneal_lr": 1e-3, "anneal_confirm": 2,
                                         "anneal_walks": 7, "anneal_walk_steps": 9},
                  train={"steps": 4, "checkpoint_every": 2})
    redrawn = tmp_path / "redrawn"
    train(cfg, str(redrawn), log=lambda line: None)
    (redrawn / "gridness.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"step": 2, "grid_fraction": 0.2, "switch": True, "confirmed": False},
        {"step": 4, "grid_fraction": 0.42, "switch": False, "confirmed": True}]))
    other = train(replace(cfg, train={"seed": 9}), str(tmp_path / "other"),
                  log=lambda line: None)
    seen = {}

    def fake(params, c, **k):
        seen.update(params=params, cfg=c, **k)
        return 0.3, 0.1

    monkeypatch.setattr(sicref.evaluate, "grid_check", fake)
    assert rescale_readings(str(redrawn), str(tmp_path / "other")) == (0.42, 0.3)
    assert (seen["n_walks"], seen["n_steps"]) == (7, 9) and seen["cfg"] == cfg
    assert all((seen["params"][k] == other[k]).all() for k in other)


def test_a_directory_that_is_not_a_stage_is_refused_before_any_training(source, tmp_path):
    other = tmp_path / "other"
    (other / "run").mkdir(parents=True)
    (other / "notes.txt").write_text("mine")
    with pytest.raises(TrainingError, match="not empty and holds no freed.json"):
        grow(str(source), summary_for(10), str(other), 4, seed=1, log=QUIET)
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt", "run"]
    assert not any((other / "run").iterdir())


def test_the_grow_command_is_the_stage_and_its_readings(source, tmp_path, monkeypatch,
                                                        capsys):
    from sicref.cli import main

    monkeypatch.setattr(sicref.grow, "GROW_CHECKPOINT_EVERY", 2)
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps(summary_for(10)))
    out = tmp_path / "cmd"
    assert main(["grow", str(source), "--summary", str(summary), "--out", str(out),
                 "--steps", "4", "--seed", "3", "--reading-seed", "5",
                 "--no-evaluate"]) == 0
    whole, _ = grow(str(source), summary_for(10), str(tmp_path / "lib"), 4, 3, log=QUIET)
    a = load_checkpoint(whole)["params"]
    b = load_checkpoint(str(out / "run"))["params"]
    assert all(np.array_equal(a[k], b[k]) for k in a)
    over = json.loads((out / "evaluation/over_training.json").read_text())
    assert [r["step"] for r in over] == [2, 4]
    assert not (out / "evaluation/summary.json").exists()
    # called again without --no-evaluate: nothing retrained, the picked step evaluated
    capsys.readouterr()
    assert main(["grow", str(source), "--summary", str(summary), "--out", str(out),
                 "--steps", "4", "--seed", "3", "--reading-seed", "5"]) == 0
    printed = capsys.readouterr().out
    assert "training to step" not in printed and "(read before)" in printed
    evaluated = json.loads((out / "evaluation/summary.json").read_text())
    assert evaluated["step"] == pick_checkpoint(over) and evaluated["seed"] == 5
    assert set(evaluated["arenas"]) == {"2m", "3m", "4m"}
    assert printed.rstrip().endswith(f"figures and summary.json in {out / 'evaluation'}")
    # the readings draw their walks from --reading-seed, not the stage's seed
    reread = sicref.evaluate.checkpoint_reading(
        str(out / "run/checkpoints/step_4.npz"), 2.0, seed=5, walk=sicref.evaluate.
        WalkConfig(400, 100), modules=sicref.grow.GROW_MODULES)
    assert reread["request"] == over[-1]["request"]
    # bad settings and a directory that is not a stage: a named error, exit code 2
    assert main(["grow", str(source), "--summary", str(summary), "--out",
                 str(tmp_path / "x"), "--steps", "0", "--seed", "3"]) == 2
    assert "--steps must be >= 1, got 0" in capsys.readouterr().err
    assert main(["grow", str(source), "--summary", str(summary), "--out",
                 str(tmp_path / "lib" / "run"), "--steps", "4", "--seed", "3"]) == 2
    assert "holds no freed.json" in capsys.readouterr().err
