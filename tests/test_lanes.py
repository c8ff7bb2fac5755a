"""The stage in lanes (sicref.lanes): freeing seeds raced side by side, the first to
hold two modules kept, whatever the timing."""

import json
import os

import numpy as np
import pytest

import sicref.grow
import sicref.lanes
from sicref.checkpoint import atomic_write_text, load_checkpoint
from sicref.grow import grow
from sicref.lanes import (held_step, lane_dir, lane_seed, lanes_winner, race_stage,
                          still_in_race)
from sicref.train import TrainingError

from test_grow import QUIET, catch_at_once, sized, source, summary_for  # noqa: F401

ONE, TWO = (50,), (10, 40)


def readings(*sizes, every=1000):
    return [sized(every * (k + 1), *s) for k, s in enumerate(sizes)]


def test_held_step_is_where_until_two_stops():
    assert held_step([]) is None
    assert held_step(readings(TWO, ONE, TWO)) is None  # not two in a row
    assert held_step(readings(ONE, TWO, TWO, ONE)) == 3000  # the first hold, not later
    assert held_step(readings(TWO, TWO)) == 2000


def test_the_lane_that_holds_two_modules_first_wins_once_no_other_can_beat_it():
    late, early = readings(ONE, TWO, TWO), readings(TWO, TWO)
    assert lanes_winner([(late, True), (early, True)]) == 1
    # lane 0 read only to 1000 could still hold at 2000 and win the tie: not decided
    assert lanes_winner([(late[:1], False), (early, False)]) is None
    assert lanes_winner([(late[:2], False), (early, False)]) == 1
    # a tie at the same step goes to the lower lane
    assert lanes_winner([(early, True), (early, True)]) == 0
    # lane 0 holds at 3000: lane 1 must be read to 2000 (a hold at 3000 would lose the tie)
    assert lanes_winner([(late, True), (readings(ONE), False)]) is None
    assert lanes_winner([(late, True), (readings(ONE, TWO), False)]) == 0
    assert not still_in_race((readings(ONE, TWO), False), 1, 3000, 0)
    assert still_in_race((readings(ONE), False), 1, 3000, 0)
    assert not still_in_race((readings(ONE), True), 1, 3000, 0)  # ended without a hold


def test_where_no_lane_holds_two_the_most_modules_win_once_all_have_ended():
    a, b = readings(ONE, ONE, TWO), readings(ONE, TWO, ONE)
    assert lanes_winner([(a, True), (b, False)]) is None
    assert lanes_winner([(a, True), (b, True)]) == 0  # tie: the lower lane
    assert lanes_winner([(readings(ONE), True), (b, True), (a, True)]) == 1
    assert lanes_winner([(readings(ONE), True), ([], True)]) == 0


class ScriptedLane:
    """A lane process that writes one more scripted reading at each poll and ends at
    its first hold of two modules or at the end of its script."""

    def __init__(self, path, script, events):
        self.path, self.script, self.events, self.rows = path, script, events, []
        self.returncode = None
        os.makedirs(os.path.join(path, "evaluation"), exist_ok=True)
        atomic_write_text(os.path.join(path, "freed.json"), json.dumps({"lane": path}))
        events.append(("start", os.path.basename(path)))

    def poll(self):
        if self.returncode is None:
            if held_step(self.rows) is not None or len(self.rows) == len(self.script):
                self.returncode = 0
            else:
                self.rows.append(self.script[len(self.rows)])
                atomic_write_text(os.path.join(self.path, "evaluation",
                                               "over_training.json"), json.dumps(self.rows))
        return self.returncode

    def terminate(self):
        self.events.append(("stop", os.path.basename(self.path), len(self.rows)))

    def wait(self):
        return self.returncode


def scripted_launch(scripts, events):
    def launch(source, summary_path, path, steps, seed, reading_seed):
        lane = (seed - 7) // sicref.lanes.LANE_SEED_STRIDE
        assert reading_seed == 7 and seed == lane_seed(7, lane)
        return ScriptedLane(path, scripts[lane], events), open(os.devnull, "w")
    return launch


@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_the_race_has_one_winner_whatever_the_lanes_at_a_time(tmp_path, jobs):
    scripts = [readings(ONE, ONE, ONE, TWO, TWO), readings(ONE, TWO, TWO),
               readings(ONE, ONE, TWO, TWO)]
    events = []
    run_dir, layout, rows, early = race_stage(
        "src", "summary.json", str(tmp_path), 6000, 7, 3, jobs=jobs, log=QUIET, poll=0,
        launch=scripted_launch(scripts, events))
    assert run_dir == os.path.join(lane_dir(str(tmp_path), 1), "run")
    assert layout == {"lane": lane_dir(str(tmp_path), 1)}
    assert rows == scripts[1] and early
    record = json.loads((tmp_path / "grow_lanes.json").read_text())
    assert record["winner"] == 1 and record["lanes"][1]["held_two_at"] == 3000
    # every lane that could still win was read far enough: lane 0 to 3000, lane 2 to 2000
    assert record["lanes"][0]["last_read"] >= 3000
    assert record["lanes"][2]["last_read"] >= 2000
    if jobs == 1:  # one at a time: lane 0 to its end, lane 1, then lane 2 to 2000
        assert events == [("start", "grow"), ("start", "grow_lane1"),
                          ("start", "grow_lane2"), ("stop", "grow_lane2", 2)]
    assert lane_dir(str(tmp_path), 0) == str(tmp_path / "grow")


def test_a_lane_that_can_no_longer_win_is_stopped_and_not_started_again(tmp_path):
    scripts = [readings(TWO, TWO), readings(*[ONE] * 10)]
    events = []
    race_stage("src", "summary.json", str(tmp_path), 10000, 7, 2, jobs=2, log=QUIET,
               poll=0, launch=scripted_launch(scripts, events))
    assert events[:2] == [("start", "grow"), ("start", "grow_lane1")]
    # lane 0 holds at 2000 when both are read to 2000: lane 1 is out (it needed 1000)
    assert events[2:] == [("stop", "grow_lane1", 2)]
    # called again: the readings on disk decide; no lane is started again
    events.clear()
    again = race_stage("src", "summary.json", str(tmp_path), 10000, 7, 2, jobs=2,
                       log=QUIET, poll=0, launch=scripted_launch(scripts, events))
    assert events == [] and again[0] == str(tmp_path / "grow" / "run")


def test_a_continued_race_starts_no_lane_whose_readings_reached_the_end(tmp_path):
    scripts = [readings(ONE, TWO, ONE), readings(ONE, ONE, ONE)]
    events = []
    first = race_stage("src", "summary.json", str(tmp_path), 3000, 7, 2, jobs=2,
                       log=QUIET, poll=0, launch=scripted_launch(scripts, events))
    assert first[0] == str(tmp_path / "grow" / "run")  # no hold: the most modules, lane 0
    assert not first[3] and first[2] == scripts[0]
    events.clear()
    again = race_stage("src", "summary.json", str(tmp_path), 3000, 7, 2, jobs=2,
                       log=QUIET, poll=0, launch=scripted_launch(scripts, events))
    assert events == [] and again == first
    record = json.loads((tmp_path / "grow_lanes.json").read_text())
    assert [lane["ended"] for lane in record["lanes"]] == [True, True]


def test_a_failed_lane_stops_the_race_with_its_log_named(tmp_path):
    class Failed:
        returncode = 3

        def poll(self):
            return 3

    with pytest.raises(TrainingError, match=r"grow lane 0 .* exit code 3; its log is .*grow\.log"):
        race_stage("src", "summary.json", str(tmp_path), 2000, 7, 2, jobs=1, log=QUIET,
                   poll=0, launch=lambda *a: (Failed(), open(os.devnull, "w")))
    with pytest.raises(TrainingError, match="lanes and jobs must be >= 1"):
        race_stage("src", "summary.json", str(tmp_path), 2000, 7, 0, log=QUIET)


def test_the_lanes_are_the_plain_stage_with_their_seeds(source, tmp_path):  # noqa: F811
    """Real `sicref grow` subprocesses at tiny size: each lane's network is sicref.grow's
    with the lane's seed, to the bit."""
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps(summary_for(10)))
    out = tmp_path / "job"
    out.mkdir()
    lines = []
    run_dir, layout, rows, early = race_stage(str(source), str(summary), str(out), 2, 5, 2,
                                              jobs=2, log=lines.append, poll=0.2)
    assert not early and [r["step"] for r in rows] == [2]  # one reading: no hold
    for lane in (0, 1):
        whole, _ = grow(str(source), summary_for(10), str(tmp_path / f"lib{lane}"), 2,
                        lane_seed(5, lane), log=QUIET)
        a = load_checkpoint(whole)["params"]
        b = load_checkpoint(os.path.join(lane_dir(str(out), lane), "run"))["params"]
        assert all(np.array_equal(a[k], b[k]) for k in a)
        over = json.loads((tmp_path / "job" / os.path.basename(lane_dir(str(out), lane))
                           / "evaluation/over_training.json").read_text())
        assert over[0]["request"]["seed"] == 5  # the readings' walks: the job's seed
    assert any(ln.startswith("grow lanes: lane ") for ln in lines)
    winner = json.loads((out / "grow_lanes.json").read_text())["winner"]
    assert run_dir == os.path.join(lane_dir(str(out), winner), "run")


def test_main_job_with_lanes_evaluates_the_winner(tmp_path, monkeypatch):
    import sicref.run

    catch_at_once(monkeypatch)
    # lane 1 holds two modules at step 2, lane 0 at step 3
    fake = {(0, 1): [40], (0, 2): [12, 30], (0, 3): [15, 30], (1, 1): [12, 30],
            (1, 2): [14, 30], (1, 3): [40]}

    def reading(path, *a, **k):
        lane = 1 if "grow_lane1" in str(path) else 0
        step = load_checkpoint(path)["step"]
        return sized(step, *fake[lane, step])

    monkeypatch.setattr(sicref.run, "checkpoint_reading", reading)

    class Done:
        returncode = 0

        def poll(self):
            return 0

    def in_process(source, summary_path, path, steps, seed, reading_seed):
        sicref.run.train_stage(source, summary_path, path, steps, seed, QUIET,
                               until_two=True, reading_seed=reading_seed)
        return Done(), open(os.devnull, "w")

    monkeypatch.setattr(sicref.lanes, "_launch", in_process)
    lines = []
    out = tmp_path / "main"
    summary = sicref.run.main_job("gated", str(out), tries=2, log=lines.append,
                                  grow_steps=6, grow_until=True, grow_lanes=2, jobs=1,
                                  redraw=False)
    assert summary["checkpoint"] == str(out / "grow_lane1/run/checkpoints/step_2.npz")
    assert json.loads((out / "grow_lane1/evaluation/summary.json").read_text()) == \
        json.loads(json.dumps(summary))
    freed = json.loads((out / "grow_lane1/freed.json").read_text())
    assert freed["seed"] == lane_seed(0, 1) == 1000  # the job's seed is 0
    assert any("lane 1 (seed" in ln and "held two modules first, at step 2" in ln
               for ln in lines)
    assert lines[-1].startswith("main job:") and "grow_lane1/evaluation" in lines[-1]


def test_main_job_refuses_lanes_without_until_two_before_any_work(tmp_path):
    import sicref.run

    for kwargs, message in (({"grow_lanes": 2, "grow_until": False},
                             "needs --grow-until-two"),
                            ({"grow_lanes": 0, "grow_until": True}, "must be >= 1")):
        with pytest.raises(ValueError, match=message):
            sicref.run.main_job("tiny", str(tmp_path / "x"), grow_steps=4, log=QUIET,
                                **kwargs)
        assert not (tmp_path / "x").exists()


def test_the_main_job_by_default_redraws_and_races_two_lanes_to_two_modules(monkeypatch):
    # `sicref run` with no flags: redrawn tries, a stage of at most 10000 steps stopped
    # once two modules hold, two lanes; --grow-steps 0 turns the stage (and with it the
    # race) off, --no-redraw the redrawn tries; an explicit conflict is still refused
    import sicref.run
    from sicref.cli import main
    from sicref.run import stage_settings
    from sicref.train import THREAD_VARS

    for name in THREAD_VARS:  # as `sicref run` sets them; else it re-executes itself
        monkeypatch.setenv(name, "1")
    calls = []
    monkeypatch.setattr(sicref.run, "main_job", lambda *a, **k: calls.append(k))
    assert main(["run"]) == 0
    assert main(["run", "--grow-steps", "0", "--no-redraw"]) == 0
    assert main(["run", "--no-grow-until-two", "--grow-lanes", "1"]) == 0
    assert main(["run", "--grow-lanes", "3"]) == 0
    got = [(k["grow_steps"], k["redraw"],
            stage_settings(k["grow_steps"], k["grow_until"], k["grow_lanes"]))
           for k in calls]
    assert got == [(10000, True, (True, 2)), (0, False, (False, 1)),
                   (10000, True, (False, 1)), (10000, True, (True, 3))]
    for args, message in (((0, True), "needs --grow-steps N > 0"),
                          ((0, None, 2), "needs --grow-until-two"),
                          ((10, False, 2), "needs --grow-until-two"),
                          ((10, None, 0), "must be >= 1"), ((-1,), "must be >= 0")):
        with pytest.raises(ValueError, match=message):
            stage_settings(*args)
