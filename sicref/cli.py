"""Command line: a thin layer over the library. `sicref <command> --help` for each."""

import argparse
import contextlib
import os
import signal
import sys

from .checkpoint import CheckpointError
from .config import DEFAULT_PRESET, ConfigError, load_config, preset, replace


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def sigterm_exits():
    """Inside the block SIGTERM (kill, a batch system) ends the command as Ctrl-C does,
    by an exception, so that cleanup code runs: the commands that start training
    processes stop them instead of leaving them to train on unwatched."""
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def config_from_args(args):
    """--preset / --config plus --steps / --seed overrides, validated."""
    if getattr(args, "config", None):
        cfg = load_config(args.config)
    else:
        cfg = preset(args.preset or DEFAULT_PRESET)
    changes = {}
    if getattr(args, "steps", None) is not None:
        changes["steps"] = args.steps
    if getattr(args, "seed", None) is not None:
        changes["seed"] = args.seed
    return replace(cfg, train=changes) if changes else cfg


def add_config_args(p):
    """--preset NAME | --config FILE.json, shared by every command that builds a config."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--preset", help=f"named preset (default {DEFAULT_PRESET!r})")
    group.add_argument("--config", metavar="FILE.json", help="config file")


def add_threads_arg(p):
    """--threads N: the BLAS thread count of this process (default: the environment's)."""
    p.add_argument("--threads", type=int, metavar="N", dest="process_threads",
                   help="BLAS threads for this process (default: as the environment "
                        "sets OMP_NUM_THREADS / OPENBLAS_NUM_THREADS, else every core); "
                        "1 is fastest when several runs share the cores")


def reexec_for_threads(args, argv):
    """Apply --threads. BLAS reads its thread count when NumPy is first imported, which
    has happened by now, so when the environment does not already say `threads` the
    command runs again in a fresh process whose environment does (os.execve: this
    process is replaced and the call does not return). The new process also gets
    sicref.train.MALLOC_ENV where the environment does not set those names, as the
    main job's training subprocesses do (sicref.train.child_env). Returns without doing
    anything when --threads is absent or already in force."""
    from .train import THREAD_VARS, child_env

    threads = getattr(args, "process_threads", None)  # not `sweep --threads` (per run)
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    if all(os.environ.get(name) == str(threads) for name in THREAD_VARS):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "sicref", *argv],
              child_env(threads))


def cmd_train(args):
    from .train import train

    if args.resume and not (args.preset or args.config):
        from .checkpoint import load_checkpoint

        cfg = load_checkpoint(args.resume)["config"]
        if args.steps is not None:
            cfg = replace(cfg, train={"steps": args.steps})
    else:
        cfg = config_from_args(args)
    train(cfg, args.out, resume=args.resume, overwrite=args.overwrite,
          max_seconds=args.max_seconds, init_from=args.init_from)
    print(f"done: {args.out}")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="sicref", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a SIC network into a run directory")
    add_config_args(p)
    p.add_argument("--steps", type=int, help="total gradient steps")
    p.add_argument("--seed", type=int)
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--resume", metavar="CKPT", help="checkpoint or run dir to continue")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing run directory")
    p.add_argument("--init-from", metavar="CKPT",
                   help="new run starting from another run's parameters")
    p.add_argument("--max-seconds", type=float,
                   help="stop (with a checkpoint) after this much wall time")
    add_threads_arg(p)
    p.set_defaults(func=cmd_train)

    # The command groups live beside their library modules (and import the helpers
    # above), so they are imported here rather than at the top.
    from .crosscheck import add_interchange_commands
    from .evaluate import add_evaluate_commands
    from .run import add_grow_commands, add_run_commands
    from .sweep import add_sweep_commands

    for register in (add_interchange_commands, add_evaluate_commands, add_run_commands,
                     add_grow_commands, add_sweep_commands):
        register(sub)
    # `sicref COMMAND --help` opens with the line the command list shows for it.
    for action in sub._choices_actions:
        command = sub.choices[action.dest]
        if command.description is None:
            command.description = action.help
    return parser


def main(argv=None):
    from .train import TrainingError

    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        reexec_for_threads(args, argv)
        return args.func(args)
    except (ConfigError, CheckpointError, TrainingError, ValueError, OSError) as e:
        print(f"sicref {args.command}: error: {e}", file=sys.stderr)
        return 2
