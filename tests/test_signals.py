"""A command that starts training processes and is stopped by SIGTERM stops them too."""

import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/task"),
                                reason="reads a process's children from Linux /proc")


def _children(pid):
    """The child processes of pid, started from any of its threads."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(p) for p in f.read().split()]
        except FileNotFoundError:
            pass
    return found


def _state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0]
    except FileNotFoundError:
        return "gone"


@pytest.mark.parametrize("command, run_dir", [
    (["run", "--preset", "tiny", "--steps", "1000000"], "tries/try0_seed0"),
    (["sweep", "--preset", "tiny", "--set", "train.steps=1000000", "--jobs", "1"],
     "steps=1000000"),
])
def test_sigterm_stops_the_training_processes(tmp_path, command, run_dir):
    out = tmp_path / "out"
    job = subprocess.Popen([sys.executable, "-m", "sicref", *command, "--out", str(out)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = out / run_dir / "metrics.jsonl"
    pids = []
    try:
        deadline = time.monotonic() + 120
        while not (metrics.exists() and metrics.stat().st_size):
            assert job.poll() is None, "the command ended before training"
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.2)
        pids = _children(job.pid)
        assert len(pids) == 1  # the `sicref train` process
        job.send_signal(signal.SIGTERM)
        assert job.wait(timeout=60) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 30
        while _state(pids[0]) not in ("gone", "Z") and time.monotonic() < deadline:
            time.sleep(0.1)
        state = _state(pids[0])
        assert state in ("gone", "Z"), f"training process {pids[0]} still running ({state})"
    finally:  # leave nothing running behind a failed test
        if job.poll() is None:
            pids += _children(job.pid)
            job.kill()
        for pid in pids:
            if _state(pid) not in ("gone", "Z"):
                os.kill(pid, signal.SIGKILL)
