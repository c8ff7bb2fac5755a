"""The main job's tries: several initialisations, the first that catches a lattice."""

import json

import pytest

from sicref.checkpoint import load_checkpoint
from sicref.config import preset, replace
from sicref.run import tries_lines
from sicref.train import train
from sicref.tries import TriesError, prepare_out, run_tries, try_seed, try_status

QUIET = lambda line: None


def gated(threshold, steps=20, **optim):
    """tiny with the gate every 5 steps (the real grid check, 4 walks)."""
    o = {"anneal_lr": 1e-3, "anneal_check_every": 5, "anneal_steps": 5, "anneal_walks": 4,
         "anneal_grid_fraction": threshold, **optim}
    return replace(preset("tiny"), optim=o, train={"steps": steps, "checkpoint_every": 5})


def test_no_catch_runs_every_try_to_its_give_up(tmp_path):
    cfg = gated(1.0, anneal_give_up=10)  # every unit a grid unit: never at this size
    chosen, rows = run_tries(cfg, str(tmp_path), 3, jobs=2, log=QUIET, poll=0.05)
    assert [r["status"] for r in rows] == ["gave up"] * 3
    assert [r["steps"] for r in rows] == [10, 10, 10]
    assert [r["seed"] for r in rows] == [0, 1000, 2000]
    best = max(range(3), key=lambda i: (rows[i]["best_reading"], -i))
    assert chosen == best
    layout = json.loads((tmp_path / "tries.json").read_text())
    assert layout["chosen"] == chosen and layout["caught"] is False
    assert "came closest" in tries_lines(rows, chosen)[-1]
    from sicref.plots import tries_plot

    tries_plot(rows, 1.0, str(tmp_path), "tries.png")
    assert (tmp_path / "tries.png").read_bytes()[:4] == b"\x89PNG"


class InProcess:
    """A try trained in a thread of this process, so that a test can script the gate."""

    def __init__(self, cfg, run_dir, threads, init_from=None):
        import os
        import threading

        latest = os.path.join(run_dir, "checkpoints", "latest.npz")
        resume = latest if os.path.exists(latest) else None
        self.returncode, self.terminated = None, False

        def work():
            if resume is None and init_from is not None:
                train(cfg, run_dir, init_from=init_from, overwrite=True, log=QUIET)
            else:
                train(cfg, run_dir, resume=resume, log=QUIET)
            self.returncode = 0

        self.thread = threading.Thread(target=work)
        self.thread.start()

    def poll(self):
        return None if self.thread.is_alive() else self.returncode

    def terminate(self):
        self.terminated = True

    def wait(self):
        self.thread.join()

    def close(self):
        pass


@pytest.fixture
def gate_by_seed(monkeypatch):
    """grid_check reads 0.5 for the seeds in gate_by_seed.catch, else 0 (by g0_raw)."""
    import numpy as np

    import sicref.evaluate
    from sicref.model import init_params

    marks = {}

    def fake(params, cfg, arena_size=2.0, n_walks=100, seed=0, n_steps=400):
        return (0.5 if fake.lookup(params) in fake.catch else 0.0), 0.1

    def lookup(params):
        # g0_raw moves little in a few steps: the nearest initial g0_raw names the seed
        return min(marks, key=lambda s: np.abs(params["g0_raw"] - marks[s]).sum())

    from sicref.grow import free_units

    cfg = preset("tiny")
    n = cfg.model.n_units
    for s in (0, 1000, 2000, 3000):
        marks[s] = init_params(np.random.default_rng(s), n, cfg.model.hidden)["g0_raw"]
        # a redrawn try's start entries are drawn from its try's seed ("r", seed)
        marks["r", s] = free_units(init_params(np.random.default_rng(0), n,
                                               cfg.model.hidden),
                                   np.arange(n), np.random.default_rng(s))["g0_raw"]
    fake.lookup, fake.catch = lookup, set()
    monkeypatch.setattr(sicref.evaluate, "grid_check", fake)
    return fake


def launch_in_process(cfg, run_dir, threads, init_from=None):
    p = InProcess(cfg, run_dir, threads, init_from)
    return p, p


def tiny_redraw(cfg):
    """A redrawn try's config at tiny size (sicref.grow.redraw_config is the real one):
    longer trajectories, a lower lr, its own gate."""
    return replace(cfg, data={"seq_len": 8}, optim={"lr": 3e-3, "anneal_lr": 3e-4})


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_try_that_gives_up_is_followed_by_its_redrawn_try(tmp_path, gate_by_seed, jobs):
    import numpy as np

    from sicref.grow import free_units

    gate_by_seed.catch = {("r", 1000)}  # only try 1, redrawn, reads as a lattice
    cfg = gated(0.3, anneal_confirm=1, anneal_give_up=10)
    lines = []
    chosen, rows = run_tries(cfg, str(tmp_path), 3, jobs=jobs, log=lines.append,
                             poll=0.01, launch=launch_in_process, redraw=tiny_redraw)
    assert chosen == 3
    assert [(r["try"], r["redrawn"], r["status"]) for r in rows[:4]] == [
        (0, False, "gave up"), (0, True, "gave up"), (1, False, "gave up"),
        (1, True, "caught")]
    assert rows[4]["status"] in ("not run", "stopped") and rows[5]["status"] == "not run"
    assert rows[3]["run_dir"] == str(tmp_path / "tries/try1_seed1000_redrawn")
    assert rows[3]["seed"] == 1000 and rows[3]["switch_step"] == 5
    # the redrawn try starts from try 1's last checkpoint with every unit redrawn from
    # try 1's seed, under the redrawn config, and is that plain run to the bit
    start = load_checkpoint(rows[3]["run_dir"] + "_start.npz")
    last = load_checkpoint(rows[2]["run_dir"])
    assert last["step"] == 10
    want = free_units(last["params"], np.arange(8), np.random.default_rng(1000))
    assert all(np.array_equal(start["params"][k], want[k]) for k in want)
    redrawn_cfg = tiny_redraw(replace(cfg, train={"seed": 1000}))
    assert load_checkpoint(rows[3]["run_dir"])["config"] == redrawn_cfg
    plain = train(redrawn_cfg, tmp_path / "plain", init_from=rows[3]["run_dir"] +
                  "_start.npz", log=QUIET)
    got = load_checkpoint(rows[3]["run_dir"])["params"]
    assert all(np.array_equal(got[k], plain[k]) for k in plain)
    assert "evaluated: try 1 redrawn (the first to catch a lattice)" in tries_lines(
        rows, chosen)[-1]
    assert any(ln.startswith("try 1 redrawn: every unit of try 1 redrawn, T = 8")
               for ln in lines)
    layout = json.loads((tmp_path / "tries.json").read_text())
    assert layout["chosen"] == 3 and layout["caught"] is True
    from sicref.plots import tries_plot

    tries_plot(rows, 0.3, str(tmp_path), "tries.png")
    # continued, the finished job relaunches nothing and reads the same
    def no_launch(*a, **k):
        raise AssertionError(f"relaunched {a[1]}")

    again = run_tries(cfg, str(tmp_path), 3, jobs=jobs, log=QUIET, poll=0.01,
                      launch=no_launch, redraw=tiny_redraw)
    assert again[0] == 3 and again[1][:4] == rows[:4]


def test_a_try_that_catches_is_not_redrawn(tmp_path, gate_by_seed):
    gate_by_seed.catch = {0}
    cfg = gated(0.3, anneal_confirm=1, anneal_give_up=10)
    chosen, rows = run_tries(cfg, str(tmp_path), 2, jobs=2, log=QUIET, poll=0.01,
                             launch=launch_in_process, redraw=tiny_redraw)
    assert chosen == 0 and rows[0]["status"] == "caught"
    assert rows[1]["status"] == "not run" and not (tmp_path / "tries/try0_seed0_redrawn"
                                                   ).exists()


@pytest.mark.parametrize("jobs", [1, 2])
def test_the_lowest_try_that_catches_is_chosen(tmp_path, gate_by_seed, jobs):
    gate_by_seed.catch = {1000, 2000}
    cfg = gated(0.3, anneal_confirm=1, anneal_give_up=10)
    chosen, rows = run_tries(cfg, str(tmp_path), 4, jobs=jobs, log=QUIET, poll=0.01,
                             launch=launch_in_process)
    assert chosen == 1
    assert [r["status"] for r in rows[:2]] == ["gave up", "caught"]
    assert rows[1]["switch_step"] == 5 and rows[1]["steps"] == 10  # 5 + anneal_steps
    assert rows[3]["status"] == "not run"  # never started: try 1 caught first
    last = load_checkpoint(rows[1]["run_dir"])
    assert last["schedule"]["confirmed"] and last["schedule"]["switch_step"] == 5
    assert "the first to catch a lattice" in tries_lines(rows, chosen)[-1]


@pytest.mark.parametrize("jobs", [1, 2])
def test_every_try_gets_one_blas_thread_whatever_jobs_is(tmp_path, gate_by_seed, jobs,
                                                         monkeypatch):
    """The BLAS thread count changes the order of sums (docs/performance.md), so a try
    may not inherit it from the environment: one thread each, with one job or two."""
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    seen = []

    def launch(cfg, run_dir, threads):
        seen.append(threads)
        return launch_in_process(cfg, run_dir, threads)

    run_tries(gated(0.3, anneal_confirm=1, anneal_give_up=10), str(tmp_path), 2,
              jobs=jobs, log=QUIET, poll=0.01, launch=launch)
    assert seen == [1, 1]


def test_a_try_equals_a_plain_run_with_its_seed(tmp_path):
    """A try is an ordinary run: same parameters as `train` with seed + 1000 i."""
    cfg = gated(1.0, anneal_give_up=10)
    chosen, rows = run_tries(cfg, str(tmp_path / "main"), 2, jobs=2, log=QUIET, poll=0.05)
    plain = train(replace(cfg, train={"seed": try_seed(0, 1)}), tmp_path / "plain",
                  log=QUIET)
    got = load_checkpoint(rows[1]["run_dir"])["params"]
    assert all((got[k] == plain[k]).all() for k in plain)


def test_continuing_a_finished_job_retrains_nothing(tmp_path):
    cfg = gated(1.0, anneal_give_up=10)
    run_tries(cfg, str(tmp_path), 2, jobs=2, log=QUIET, poll=0.05)
    stamp = (tmp_path / "tries/try1_seed1000/checkpoints/latest.npz").stat().st_mtime_ns
    lines = []

    def no_launch(cfg, run_dir, threads):
        raise AssertionError(f"relaunched {run_dir}")

    chosen, rows = run_tries(cfg, str(tmp_path), 2, jobs=2, log=lines.append, poll=0.05,
                             launch=no_launch)
    assert [r["status"] for r in rows] == ["gave up", "gave up"]
    assert "try 1 (seed 1000) had ended: gave up" in lines
    assert (tmp_path / "tries/try1_seed1000/checkpoints/latest.npz").stat().st_mtime_ns \
        == stamp


def test_continuing_resumes_only_the_unfinished_caught_try(tmp_path, gate_by_seed):
    """Try 0 gave up, try 1 caught and was interrupted: a continued job resumes try 1
    alone (no finished try relaunched, none above the caught one started) and ends as
    a job never interrupted."""
    import shutil

    import numpy as np

    gate_by_seed.catch = {1000}
    cfg = gated(0.3, anneal_confirm=1, anneal_give_up=10)
    run_tries(cfg, str(tmp_path), 4, jobs=1, log=QUIET, poll=0.01, launch=launch_in_process)
    ckpts = tmp_path / "tries/try1_seed1000/checkpoints"
    done = load_checkpoint(ckpts / "latest.npz")
    assert done["step"] == 10
    shutil.copy(ckpts / "step_5.npz", ckpts / "latest.npz")  # as if stopped at step 5
    launched = []

    def recording(cfg, run_dir, threads):
        launched.append(run_dir)
        return launch_in_process(cfg, run_dir, threads)

    chosen, rows = run_tries(cfg, str(tmp_path), 4, jobs=2, log=QUIET, poll=0.01,
                             launch=recording)
    assert launched == [rows[1]["run_dir"]]
    assert chosen == 1 and [r["status"] for r in rows] == ["gave up", "caught", "not run",
                                                           "not run"]
    again = load_checkpoint(ckpts / "latest.npz")
    assert again["step"] == 10
    assert all(np.array_equal(again["params"][k], done["params"][k]) for k in done["params"])


def test_try_status_reads_the_gate(tmp_path):
    cfg = gated(0.5, anneal_confirm=2)
    d = tmp_path / "run"
    d.mkdir()
    assert try_status(str(d), cfg)[0] == "open"
    rows = [{"step": 5, "switch": True}]
    (d / "gridness.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert try_status(str(d), cfg)[0] == "open"  # opened, not yet confirmed
    assert try_status(str(d), replace(cfg, optim={"anneal_confirm": 0}))[0] == "caught"
    rows.append({"step": 10, "confirmed": True})
    (d / "gridness.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert try_status(str(d), cfg)[0] == "caught"
    rows[1] = {"step": 10, "gave_up": True}
    (d / "gridness.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert try_status(str(d), cfg)[0] == "gave up"


def test_output_directory_rules(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(TriesError, match="not a `sicref run` directory"):
            prepare_out(str(other), overwrite)
    assert (other / "notes.txt").read_text() == "keep me"
    with pytest.raises(TriesError, match=">= 1"):
        run_tries(gated(1.0), str(tmp_path / "x"), 0, log=QUIET)


def test_progress_line_is_the_tries_latest(tmp_path):
    from sicref.tries import _last_progress_line

    run = tmp_path / "try0_seed0"
    assert _last_progress_line(str(run)) is None
    lines = ["step 100/10000 | total 0.1 | lr 1.00e-03 | 20.0 steps/s | ETA 8m",
             "step 500: gridness check: 0% grid units",
             "step 200/10000 | total 0.09 | lr 1.00e-03 | 21.0 steps/s | ETA 7m"]
    (tmp_path / "try0_seed0.log").write_text("x" * 5000 + "\n" + "\n".join(lines) + "\n")
    assert _last_progress_line(str(run)) == lines[2]


@pytest.mark.parametrize("tries", [1, 2])  # --tries 1 still redraws its one try
def test_main_job_with_redraw_evaluates_the_redrawn_try_that_caught(tmp_path, gate_by_seed,
                                                                    monkeypatch, tries):
    import sicref.run

    gate_by_seed.catch = {("r", 0)}  # try 0 gives up, its redrawn try catches
    cfg = gated(0.3, anneal_confirm=1, anneal_give_up=10)
    monkeypatch.setattr(sicref.run, "preset", lambda name: cfg)
    monkeypatch.setattr(sicref.run, "redraw_config", tiny_redraw)
    real = sicref.run.run_tries
    monkeypatch.setattr(sicref.run, "run_tries", lambda *a, **k: real(
        *a, **{**k, "launch": launch_in_process, "poll": 0.01}))
    import sicref.grow

    monkeypatch.setattr(sicref.grow, "GROW_SEQ_LEN", 4)  # so that the 1.5 shows
    monkeypatch.setattr(sicref.grow, "GROW_CHECKPOINT_EVERY", 1)
    monkeypatch.setattr(sicref.grow, "RESCALE_STEPS", 2)
    monkeypatch.setattr(sicref.run, "pick_checkpoint", lambda rows: 2)
    lines = []
    out = tmp_path / "main"
    summary = sicref.run.main_job("gated", str(out), tries=tries, log=lines.append,
                                  redraw=True, grow_steps=2, grow_until=False)
    where = str(out / "tries/try0_seed0_redrawn")
    # the redrawn lattice (T = 8) is rescaled from its confirmed checkpoint (switch at
    # 5, confirmed at 10) at the T a try's lattice grows at (1.5 x 6), with the try's seed
    rescaled = load_checkpoint(where + "_rescaled")
    assert rescaled["step"] == 2 and rescaled["config"].data.seq_len == 9
    assert rescaled["config"].optim.lr == sicref.grow.GROW_LR
    assert rescaled["config"].optim.anneal_lr == 0 and rescaled["config"].train.seed == 0
    plain = train(rescaled["config"], tmp_path / "plain",
                  init_from=where + "/checkpoints/step_10.npz", log=QUIET)
    assert all((plain[k] == rescaled["params"][k]).all() for k in plain)
    assert any(ln.startswith("rescale: the redrawn lattice (" + where
                             + "/checkpoints/step_10.npz), 2 steps at T = 9") for ln in lines)
    # the stage grows the rescaled lattice (T = 9) at 1.5 times its T
    assert load_checkpoint(str(out / "grow/run"))["config"].data.seq_len == 13
    assert any(ln.startswith("grow: ") and "trained to step 2 at T = 13;" in ln
               for ln in lines)
    summary = json.loads((out / "evaluation/summary.json").read_text())
    assert f"evaluating try 0 redrawn, rescaled ({where}_rescaled)" in lines
    assert "evaluated: try 0 redrawn (the first to catch a lattice)" in lines
    # the gate line reads the redrawn try's gate (its lr after the switch)
    assert any(ln.startswith("annealing: the gate opened at step 5") and "lr 0.0003" in ln
               for ln in lines)
    assert any(ln.startswith("rescaled: try 0 redrawn's lattice trained 2 more steps at "
                             "T = 9") and "gate reading 50% -> 50%; evaluated with 800 "
               in ln for ln in lines)
    assert summary["step"] == 2
    assert summary["checkpoint"].startswith(where + "_rescaled")
    # evaluated as the stage's networks are: 800 walks of 100 steps
    assert (summary["walk"]["n_walks"], summary["walk"]["n_steps"]) == (800, 100)
    assert summary["request"]["modules"]["max_period_mismatch"] == 0.2
    # a second call finds the rescale done and redoes nothing
    lines2 = []
    sicref.run.main_job("gated", str(out), tries=tries, log=lines2.append, redraw=True,
                        grow_steps=2, grow_until=False)
    assert f"rescale: {where}_rescaled is done" in lines2
    assert (out / "evaluation/tries.png").exists()


def test_tries_legend_puts_a_redrawn_try_on_its_try_line():
    from sicref.plots import tries_legend

    rows = [{"try": 0, "seed": 5, "status": "gave up"},
            {"try": 0, "seed": 5, "status": "caught", "redrawn": True},
            {"try": 1, "seed": 1005, "status": "gave up"},
            {"try": 2, "seed": 2005, "status": "stopped"}]
    assert tries_legend(rows) == ["try 0 (seed 5): gave up; redrawn: caught",
                                  "try 1 (seed 1005): gave up",
                                  "try 2 (seed 2005): stopped"]


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_lattice_the_rescale_loses_sends_the_main_job_to_the_next_try(tmp_path,
                                                                       gate_by_seed,
                                                                       monkeypatch, jobs):
    import sicref.grow
    import sicref.run

    gate_by_seed.catch = {("r", 0), ("r", 1000)}  # both redrawn tries catch
    cfg = gated(0.3, anneal_confirm=1, anneal_give_up=10)
    monkeypatch.setattr(sicref.run, "preset", lambda name: cfg)
    monkeypatch.setattr(sicref.run, "redraw_config", tiny_redraw)
    real = sicref.run.run_tries
    monkeypatch.setattr(sicref.run, "run_tries", lambda *a, **k: real(
        *a, **{**k, "launch": launch_in_process, "poll": 0.01}))
    monkeypatch.setattr(sicref.grow, "RESCALE_STEPS", 2)
    out = tmp_path / "main"
    first = str(out / "tries/try0_seed0_redrawn")
    # try 0's rescaled lattice reads 35 %, more than 10 points under its 50 %
    readings = sicref.grow.rescale_readings
    monkeypatch.setattr(sicref.run, "rescale_readings", lambda run_dir, rescaled: (
        (0.5, 0.35) if run_dir == first else readings(run_dir, rescaled)))
    lines = []
    sicref.run.main_job("gated", str(out), tries=2, jobs=jobs, log=lines.append,
                        redraw=True)
    layout = json.loads((out / "tries.json").read_text())
    assert [(r["try"], r["redrawn"], r["status"]) for r in layout["tries"]] == [
        (0, False, "gave up"), (0, True, "lost"), (1, False, "gave up"),
        (1, True, "caught")]
    assert layout["chosen"] == 3
    assert any(ln.startswith(f"rescaled: try 0 redrawn's lattice trained 2 more steps")
               and ln.endswith("gate reading 50% -> 35%: lost") for ln in lines)
    assert "evaluated: try 1 redrawn (the first to catch a lattice)" in lines
    summary = json.loads((out / "evaluation/summary.json").read_text())
    assert summary["checkpoint"].startswith(str(out / "tries/try1_seed1000_redrawn_rescaled"))
    # the rule itself: at most 10 points below the confirming reading
    assert sicref.grow.rescale_held(0.5, 0.4) and not sicref.grow.rescale_held(0.5, 0.39)
