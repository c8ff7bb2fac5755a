import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from sicref.checkpoint import CheckpointError, load_checkpoint
from sicref.cli import main
from sicref.config import preset, replace
from sicref.data import sample_batch
from sicref.model import init_params
from sicref.train import TrainingError, batch_objective, train

QUIET = dict(log=lambda line: None)


def tiny(steps=20, **train_changes):
    return replace(preset("tiny"), train={"steps": steps, **train_changes})


def params_equal(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def mean_loss(params, cfg, n=20):
    rng = np.random.default_rng(12345)
    return np.mean([batch_objective(params, sample_batch(rng, 16, cfg.data.seq_len), cfg)
                    for _ in range(n)])


def test_a_tiny_run_lowers_the_total_loss(tmp_path):
    cfg = tiny(300)
    init = init_params(np.random.default_rng(cfg.train.seed), cfg.model.n_units,
                       cfg.model.hidden)
    trained = train(cfg, tmp_path / "run", **QUIET)
    assert mean_loss(trained, cfg) < mean_loss(init, cfg) - 0.01


def test_run_directory_contents(tmp_path):
    out = tmp_path / "run"
    train(tiny(20), out, **QUIET)
    assert json.loads((out / "config.json").read_text())["train"]["steps"] == 20
    records = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [5, 10, 15, 20]
    for key in ("separation", "invariance", "capacity", "conformal_isometry", "total",
                "lr", "grad_norm", "seconds"):
        assert key in records[0]
    ck = load_checkpoint(out / "checkpoints" / "latest.npz")
    assert ck["step"] == 20
    assert os.path.exists(out / "checkpoints" / "step_10.npz")


def test_two_runs_with_one_seed_are_identical(tmp_path):
    a = train(tiny(15), tmp_path / "a", **QUIET)
    b = train(tiny(15), tmp_path / "b", **QUIET)
    assert params_equal(a, b)
    c = train(tiny(15, seed=1), tmp_path / "c", **QUIET)
    assert not params_equal(a, c)


def test_k_steps_then_resume_k_equals_2k(tmp_path):
    cfg = replace(tiny(20), optim={"accumulation": 2, "plateau_window": 3,
                                   "plateau_patience": 0})
    full = train(cfg, tmp_path / "full", **QUIET)
    half = replace(cfg, train={"steps": 10})
    train(half, tmp_path / "half", **QUIET)
    resumed = train(cfg, tmp_path / "half", resume=tmp_path / "half/checkpoints/latest.npz",
                    **QUIET)
    assert params_equal(full, resumed)
    steps = [json.loads(ln)["step"]
             for ln in (tmp_path / "half/metrics.jsonl").read_text().splitlines()]
    assert steps == [5, 10, 15, 20]


def test_sigkill_mid_run_then_resume_gives_the_uninterrupted_result(tmp_path):
    cfg = replace(preset("tiny"), data={"batch_size": 16, "seq_len": 12},
                  train={"steps": 600, "checkpoint_every": 10, "log_every": 50})
    cfg_path = tmp_path / "cfg.json"
    from sicref.config import save_config
    save_config(cfg, cfg_path)
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "sicref", "train", "--config",
                             str(cfg_path), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = out / "checkpoints" / "latest.npz"
    deadline = time.time() + 60
    while not latest.exists() and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it was killed"
    killed_at = load_checkpoint(latest)["step"]
    assert 0 < killed_at < 600
    assert main(["train", "--resume", str(latest), "--out", str(out)]) == 0
    resumed = load_checkpoint(latest)
    full = train(cfg, tmp_path / "full", **QUIET)
    assert resumed["step"] == 600
    assert params_equal(resumed["params"], full)


def test_non_empty_run_directory_is_refused(tmp_path):
    out = tmp_path / "run"
    train(tiny(5), out, **QUIET)
    before = (out / "checkpoints/latest.npz").read_bytes()
    with pytest.raises(TrainingError, match="not empty"):
        train(tiny(5), out, **QUIET)
    assert (out / "checkpoints/latest.npz").read_bytes() == before
    train(tiny(10), out, overwrite=True, **QUIET)
    assert load_checkpoint(out)["step"] == 10
    other = tmp_path / "notarun"
    other.mkdir()
    (other / "precious.txt").write_text("keep")
    with pytest.raises(TrainingError, match="not a sicref run"):
        train(tiny(5), other, overwrite=True, **QUIET)
    assert (other / "precious.txt").read_text() == "keep"


def test_resume_with_a_different_config_is_refused(tmp_path):
    out = tmp_path / "run"
    train(tiny(5), out, **QUIET)
    changed = replace(tiny(10), loss={"sigma_g": 0.3})
    with pytest.raises(TrainingError, match="different config"):
        train(changed, out, resume=out / "checkpoints/latest.npz", **QUIET)


def _poison_call(monkeypatch, n, spoil):
    """Make the n-th call of train.loss_and_grad return spoil(values, grads)'s changes."""
    import sicref.train as tr

    real = tr.loss_and_grad
    calls = {"n": 0}

    def poisoned(params, batch, cfg):
        calls["n"] += 1
        values, grads = real(params, batch, cfg)
        if calls["n"] == n:
            spoil(values, grads)
        return values, grads

    monkeypatch.setattr(tr, "loss_and_grad", poisoned)


def test_non_finite_loss_stops_with_step_and_last_good_checkpoint(tmp_path, monkeypatch):
    def nan_loss(values, grads):
        values["separation"] = values["total"] = float("nan")

    _poison_call(monkeypatch, 13, nan_loss)
    out = tmp_path / "run"
    with pytest.raises(TrainingError) as err:
        train(tiny(20), out, **QUIET)
    msg = str(err.value)
    assert "step 13" in msg and "separation" in msg and "step_10.npz" in msg
    assert load_checkpoint(out)["step"] == 10


def test_corrupt_checkpoint_is_refused(tmp_path):
    out = tmp_path / "run"
    train(tiny(5), out, **QUIET)
    path = out / "checkpoints/latest.npz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(path)
    (tmp_path / "x.npz").write_bytes(b"hello")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "x.npz")


def test_cli_reports_invalid_config_without_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"loss": {"sigma_g": -1}}))
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "loss.sigma_g" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_learning_rate_half_life():
    from sicref.train import learning_rate

    assert learning_rate(1e-3, 500, 0) == 1e-3
    assert learning_rate(1e-3, 1000, 1000) == pytest.approx(5e-4)
    assert learning_rate(1e-3, 3000, 1000) == pytest.approx(1.25e-4)
    assert learning_rate(1e-3, 3999, 0, 4000, 0.1) == 1e-3
    assert learning_rate(1e-3, 4000, 0, 4000, 0.1) == pytest.approx(1e-4)


def test_resume_with_lr_half_life_equals_an_uninterrupted_run(tmp_path):
    cfg = replace(tiny(12), optim={"lr_half_life": 4})
    full = train(cfg, tmp_path / "full", **QUIET)
    train(replace(cfg, train={"steps": 6}), tmp_path / "half", **QUIET)
    resumed = train(cfg, tmp_path / "half", resume=tmp_path / "half/checkpoints/latest.npz",
                    **QUIET)
    assert params_equal(full, resumed)
    lrs = [json.loads(ln)["lr"] for ln in (tmp_path / "full/metrics.jsonl").read_text().splitlines()]
    assert lrs[-1] == pytest.approx(1e-2 * 0.5 ** 3)


def test_init_from_starts_a_new_run_from_checkpoint_parameters(tmp_path):
    first = train(tiny(8), tmp_path / "a", **QUIET)
    cfg = replace(tiny(1), optim={"lr": 1e-12})
    second = train(cfg, tmp_path / "b", init_from=tmp_path / "a", **QUIET)
    for k in first:
        np.testing.assert_allclose(second[k], first[k], atol=1e-9)
    wider = replace(tiny(1), model={"n_units": 9})
    with pytest.raises(TrainingError, match="parameter 'mlp/W2' is \\(16, 64\\)"):
        train(wider, tmp_path / "c", init_from=tmp_path / "a", **QUIET)
    assert not (tmp_path / "c").exists()


def test_resume_drops_a_log_line_cut_short_by_a_stopped_writer(tmp_path):
    from sicref.checkpoint import read_jsonl

    cfg = replace(preset("tiny"), train={"steps": 10, "checkpoint_every": 5,
                                         "log_every": 1})
    full = train(cfg, tmp_path / "full", **QUIET)
    train(replace(cfg, train={"steps": 5}), tmp_path / "part", **QUIET)
    with open(tmp_path / "part/metrics.jsonl", "a") as f:
        f.write('{"step": 6, "tot')  # the writer was stopped mid-line
    with pytest.raises(ValueError):
        read_jsonl(tmp_path / "part/metrics.jsonl")
    assert [r["step"] for r in read_jsonl(tmp_path / "part/metrics.jsonl",
                                          partial_ok=True)] == [1, 2, 3, 4, 5]
    resumed = train(cfg, tmp_path / "part", resume=tmp_path / "part", **QUIET)
    assert all(np.array_equal(full[k], resumed[k]) for k in full)
    assert (tmp_path / "part/metrics.jsonl").read_text().count("\n") == 10


def test_train_command_starts_continues_or_restarts_a_run_dir(tmp_path):
    from sicref.train import train_command

    run = tmp_path / "run"
    cmd, env = train_command("c.json", str(run), threads=1, max_seconds=5)
    assert cmd[-6:] == ["--config", "c.json", "--out", str(run), "--max-seconds", "5"]
    assert env["OPENBLAS_NUM_THREADS"] == "1"
    run.mkdir()
    (run / "metrics.jsonl").write_text("")  # died before its first checkpoint
    assert train_command("c.json", str(run))[0][-1] == "--overwrite"
    # a start from other parameters: --init-from until the run has a checkpoint
    assert train_command("c.json", str(run), init_from="s.npz")[0][-3:] == [
        "--init-from", "s.npz", "--overwrite"]
    (run / "checkpoints").mkdir()
    (run / "checkpoints/latest.npz").write_bytes(b"")
    for init_from in (None, "s.npz"):
        assert train_command("c.json", str(run), init_from=init_from)[0][-2:] == [
            "--resume", str(run / "checkpoints/latest.npz")]


def test_train_command_keeps_freed_memory_unless_the_caller_says_otherwise(monkeypatch):
    from sicref.train import MALLOC_ENV, train_command

    for name in ("MALLOC_TOP_PAD_", "MALLOC_MMAP_THRESHOLD_"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "12345")
    _, env = train_command("c.json", "run")
    assert env["MALLOC_TOP_PAD_"] == MALLOC_ENV["MALLOC_TOP_PAD_"]
    assert env["MALLOC_MMAP_THRESHOLD_"] == MALLOC_ENV["MALLOC_MMAP_THRESHOLD_"]
    assert env["MALLOC_TRIM_THRESHOLD_"] == "12345"


@pytest.mark.parametrize("accumulation,expected", [(1, [6, 9, 6, 9, 6]),
                                                   (2, [6, 9] * 5)])
def test_seq_len_alt_alternates_batches(monkeypatch, tmp_path, accumulation, expected):
    import sicref.train as train_module
    seen = []

    def recording(rng, batch_size, seq_len, *args):
        seen.append(seq_len)
        return sample_batch(rng, batch_size, seq_len, *args)

    monkeypatch.setattr(train_module, "sample_batch", recording)
    cfg = replace(tiny(5), data={"seq_len": 6, "seq_len_alt": 9},
                  optim={"accumulation": accumulation})
    train(cfg, tmp_path / "run", **QUIET)
    assert seen == expected
    seen.clear()
    train(replace(cfg, data={"seq_len_alt": 0}), tmp_path / "off", **QUIET)
    assert seen == [6] * (5 * accumulation)


def test_seq_len_alt_resumed_at_an_odd_step_equals_an_uninterrupted_run(tmp_path):
    cfg = replace(tiny(10), data={"seq_len": 5, "seq_len_alt": 8})
    full = train(cfg, tmp_path / "full", **QUIET)
    train(replace(cfg, train={"steps": 5}), tmp_path / "part", **QUIET)
    resumed = train(cfg, tmp_path / "part", resume=tmp_path / "part/checkpoints/latest.npz",
                    **QUIET)
    assert params_equal(full, resumed)
    assert not params_equal(full, train(replace(cfg, data={"seq_len_alt": 0}),
                                        tmp_path / "off", **QUIET))


def test_threads_option_reexecutes_with_the_blas_thread_count(monkeypatch, tmp_path):
    """`--threads N` re-runs the command in a process whose environment sets every BLAS
    thread variable to N (BLAS reads them only when NumPy loads), and runs in place when
    they already say N."""
    import sicref.cli as cli
    from sicref.train import THREAD_VARS

    calls = []

    def fake_execve(path, argv, env):
        calls.append((path, argv, env))
        raise SystemExit(0)  # execve never returns

    monkeypatch.setattr(cli.os, "execve", fake_execve)
    for name in THREAD_VARS:
        monkeypatch.delenv(name, raising=False)
    out = tmp_path / "run"
    argv = ["train", "--preset", "tiny", "--steps", "2", "--out", str(out), "--threads", "3"]
    with pytest.raises(SystemExit):
        cli.main(argv)
    (path, child_argv, env), = calls
    assert path == sys.executable and child_argv == [sys.executable, "-m", "sicref", *argv]
    assert all(env[name] == "3" for name in THREAD_VARS)
    assert not out.exists()  # nothing was trained in the first process

    for name in THREAD_VARS:
        monkeypatch.setenv(name, "3")
    assert cli.main(argv) == 0 and len(calls) == 1
    assert (out / "checkpoints" / "latest.npz").exists()
    assert cli.main(["train", "--preset", "tiny", "--out", str(tmp_path / "x"),
                     "--threads", "0"]) == 2


@pytest.mark.parametrize("inherited", [None, "2"])
def test_the_main_job_always_reexecutes_with_one_blas_thread(monkeypatch, tmp_path,
                                                             inherited):
    """`sicref run` computes with one BLAS thread (its tries, stage and evaluations),
    whatever the environment says, so its results do not depend on it."""
    import sicref.cli as cli
    from sicref.train import THREAD_VARS

    calls = []

    def fake_execve(path, argv, env):
        calls.append((argv, env))
        raise SystemExit(0)

    monkeypatch.setattr(cli.os, "execve", fake_execve)
    for name in THREAD_VARS:
        if inherited is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, inherited)
    argv = ["run", "--preset", "tiny", "--steps", "2", "--out", str(tmp_path / "main")]
    with pytest.raises(SystemExit):
        cli.main(argv)
    (child_argv, env), = calls
    assert child_argv[-len(argv):] == argv
    assert all(env[name] == "1" for name in THREAD_VARS)
    assert not (tmp_path / "main").exists()


def test_a_checkpoint_that_cannot_be_written_stops_training_with_the_last_good_one(
        tmp_path, monkeypatch):
    import errno

    import sicref.checkpoint

    real = sicref.checkpoint.save_checkpoint
    calls = []

    def full_disk(path, *args):
        calls.append(path)
        if len(calls) > 2:  # step 5 (step_5.npz, latest.npz) is written, step 10 is not
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, *args)

    monkeypatch.setattr(sicref.checkpoint, "save_checkpoint", full_disk)
    out = tmp_path / "run"
    with pytest.raises(TrainingError) as info:
        train(tiny(steps=15, checkpoint_every=5), out, **QUIET)
    message = str(info.value)
    assert "step 10" in message and "No space left on device" in message
    assert str(out / "checkpoints" / "step_5.npz") in message
    assert load_checkpoint(out / "checkpoints" / "latest.npz")["step"] == 5
    assert not (out / "checkpoints" / "step_10.npz").exists()


def test_every_command_help_opens_with_a_description(capsys):
    from sicref.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    assert {"train", "run", "evaluate", "sweep"} <= set(commands)
    for name in commands:
        with pytest.raises(SystemExit):
            main([name, "--help"])
        out = capsys.readouterr().out
        # the usage block, a blank line, then the description
        description = out.split("\n\n")[1].strip()
        assert description and not description.startswith(("options", "positional")), name


def test_a_resume_under_other_blas_thread_settings_says_so(tmp_path, monkeypatch):
    """Checkpoints record the BLAS thread settings; a resume under others warns (the
    order of sums changes), one under the same settings or from a checkpoint without
    the record does not."""
    import sicref.checkpoint as ck
    import sicref.train as tr

    one = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "cpus": 2}
    monkeypatch.setattr(tr, "PROCESS_BLAS_THREADS", one)
    cfg = replace(preset("tiny"), train={"steps": 2})
    run = tmp_path / "run"
    train(cfg, run, **QUIET)
    assert ck.load_checkpoint(run)["blas_threads"] == one

    def resume(settings, steps):
        monkeypatch.setattr(tr, "PROCESS_BLAS_THREADS", settings)
        lines = []
        train(replace(cfg, train={"steps": steps}), run, resume=str(run), log=lines.append)
        return [ln for ln in lines if ln.startswith("warning:")]

    assert resume(one, 3) == []
    two = dict(one, OPENBLAS_NUM_THREADS="2")
    warned, = resume(two, 4)
    assert "'OPENBLAS_NUM_THREADS': '1'" in warned and "'OPENBLAS_NUM_THREADS': '2'" in warned
    assert "not be bit-identical" in warned
    assert ck.load_checkpoint(run)["blas_threads"] == two  # the latest writer's settings
    # a checkpoint written without the record (as before it existed): nothing to compare
    state = ck.load_checkpoint(run)
    ck.save_checkpoint(run / "checkpoints" / "latest.npz", state["step"], state["params"],
                       state["opt_state"], state["plateau"], state["rng_state"],
                       state["config"], state["schedule"])
    assert ck.load_checkpoint(run)["blas_threads"] is None
    assert resume(one, 5) == []


def test_non_finite_gradient_with_a_finite_loss_stops_training(tmp_path, monkeypatch):
    def inf_gradient(values, grads):
        grads["mlp/W1"] = grads["mlp/W1"].copy()
        grads["mlp/W1"][0, 0] = np.inf

    _poison_call(monkeypatch, 7, inf_gradient)
    with pytest.raises(TrainingError) as err:
        train(tiny(20), tmp_path / "run", **QUIET)
    assert "step 7" in str(err.value) and "grad[mlp/W1]" in str(err.value)


def test_the_loops_in_place_steps_equal_pure_train_steps(tmp_path):
    """train() updates its arrays in place (adamw_update(inplace=True)); the same steps
    taken with the pure train_step from the same start give the same bits."""
    from sicref.optim import adamw_init, plateau_init
    from sicref.train import train_step

    cfg = replace(tiny(12), optim={"weight_decay": 0.01})
    looped = train(cfg, tmp_path / "run", **QUIET)
    rng = np.random.default_rng(cfg.train.seed)
    params = init_params(rng, cfg.model.n_units, cfg.model.hidden, cfg.model.n_layers)
    opt, plateau = adamw_init(params), plateau_init(cfg.optim.lr)
    for step in range(1, 13):
        params, opt, plateau, _ = train_step(params, opt, plateau, rng, cfg, step)
    assert params_equal(looped, params)


def test_threads_reexecution_keeps_freed_memory_too(monkeypatch):
    """`sicref train --threads N` re-executes itself with N BLAS threads and with
    MALLOC_ENV where the caller's environment does not set those names."""
    import sicref.cli as cli
    from sicref.train import MALLOC_ENV, THREAD_VARS

    seen = {}

    def fake_execve(path, argv, env):
        seen.update(argv=argv, env=env)
        raise SystemExit(0)

    for name in (*THREAD_VARS, "MALLOC_TOP_PAD_", "MALLOC_MMAP_THRESHOLD_"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "12345")
    monkeypatch.setattr(cli.os, "execve", fake_execve)
    argv = ["train", "--preset", "tiny", "--out", "x", "--threads", "1"]
    with pytest.raises(SystemExit):
        cli.reexec_for_threads(cli.build_parser().parse_args(argv), argv)
    assert seen["argv"][-len(argv):] == argv
    assert all(seen["env"][name] == "1" for name in THREAD_VARS)
    assert seen["env"]["MALLOC_TOP_PAD_"] == MALLOC_ENV["MALLOC_TOP_PAD_"]
    assert seen["env"]["MALLOC_MMAP_THRESHOLD_"] == MALLOC_ENV["MALLOC_MMAP_THRESHOLD_"]
    assert seen["env"]["MALLOC_TRIM_THRESHOLD_"] == "12345"
