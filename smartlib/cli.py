"""The ``smart`` command line.

Every sub-command imports its module lazily (fast ``--help``), and every
:class:`~smartlib.errors.SmartError` becomes one line on stderr with exit status 2.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from .errors import SmartError
from .config import PRESETS
from .tasks import TASKS

__all__ = ["main", "build_parser"]


def _data_make(a: argparse.Namespace) -> int:
    from .data.tasks import make_task

    manifest = make_task(a.task, n=a.n, seed=a.seed, out=a.out)
    print(f"wrote {manifest}")
    return 0


def _data_check(a: argparse.Namespace) -> int:
    from .data.checks import check_path

    classes = None
    if a.classes:
        classes = [int(c) if c.lstrip("-").isdigit() else c for c in a.classes.split(",")]
    summary, problems = check_path(a.path, classes=classes)
    for p in problems:
        print(p)
    print(summary)
    return 1 if problems else 0


def _stop_on_signals() -> None:
    """SIGTERM and SIGINT stop a book run as Ctrl-C does (KeyboardInterrupt): the sitting is logged and the notebooks
    still running are stopped. A command started in the background has SIGINT ignored and would otherwise die on
    SIGTERM without either; its children get the default handlers back too."""
    import signal

    def stop(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, stop)


def _book_execute(a: argparse.Namespace) -> int:
    from .book import execute_notebooks

    _stop_on_signals()
    execute_notebooks(a.preset, only=a.only or None, jobs=a.jobs, force=a.force)
    return 0


def _results_record(a: argparse.Namespace) -> int:
    from .archive import record

    print(f"recorded {record(a.preset, runs_dir=a.runs_dir, out=a.results, executed=a.executed)}")
    return 0


def _results_verify(a: argparse.Namespace) -> int:
    from .archive import verify

    verify(a.preset, results=a.results, steps=a.steps, rtol=a.rtol)
    print(f"{a.results}/{a.preset}: verified")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``error: <command>: <what is wrong>`` and exit status 2, no usage dump."""

    def error(self, message: str):  # type: ignore[override]
        print(f"error: {self.prog}: {' '.join(message.split())}", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="smart", description="SMART pretraining and downstream studies for 3D CT")
    sub = p.add_subparsers(dest="cmd", required=True)

    data = sub.add_parser("data", help="make built-in phantom sets, check real data").add_subparsers(dest="sub", required=True)
    m = data.add_parser("make", help="write a phantom task set (NIfTI + manifest.csv)")
    m.add_argument("--task", required=True, choices=list(TASKS), help="the task set to generate (smartlib/tasks.py)")
    m.add_argument("--n", type=int, required=True)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--out", required=True)
    m.set_defaults(func=_data_make)
    c = data.add_parser("check", help="validate a folder, file or manifest; one line per problem")
    c.add_argument("path")
    c.add_argument("--classes", help="comma-separated declared classes, e.g. 0,1 (labels outside them are problems)")
    c.set_defaults(func=_data_check)

    book = sub.add_parser("book", help="execute the book's notebooks").add_subparsers(dest="sub", required=True)
    e = book.add_parser("execute", help="run every notebook with papermill at a preset")
    e.add_argument("--preset", default="cpu", choices=list(PRESETS))
    e.add_argument("--only", nargs="*", help="notebook stems to run (default: all)")
    e.add_argument("--jobs", type=_positive_int, default=1,
                   help="notebooks run side by side, each after the notebooks it needs (default 1: one after another)")
    e.add_argument("--force", action="store_true",
                   help="run every notebook again, also those whose executed copy is current (same notebook, parameters, library)")
    e.set_defaults(func=_book_execute)

    res = sub.add_parser("results", help="record a preset's results with provenance; verify a recorded archive").add_subparsers(
        dest="sub", required=True)
    r = res.add_parser("record", help="copy runs/<preset>'s results (no checkpoints) into results/<preset> with provenance.json")
    r.add_argument("preset", choices=list(PRESETS))
    r.add_argument("--runs-dir", default="runs")
    r.add_argument("--results", default="results")
    r.add_argument("--executed", default=None,
                   help="executed notebooks whose stamps are recorded (default: book/executed of this checkout)")
    r.set_defaults(func=_results_record)
    v = res.add_parser("verify", help="check results/<preset>: hashes, commit, configs; replay each pretraining run's first steps")
    v.add_argument("preset", choices=list(PRESETS))
    v.add_argument("--results", default="results")
    v.add_argument("--steps", type=int, default=3, help="first steps of each recorded pretraining run to replay (0: none)")
    v.add_argument("--rtol", type=float, default=0.02, help="relative loss difference allowed across machines (default 0.02)")
    v.set_defaults(func=_results_verify)

    _register_training(sub)
    return p


def _register_training(sub: argparse._SubParsersAction) -> None:
    """Training, export and evaluation sub-commands (see pretrain.py / downstream modules)."""
    from . import cli_eval, cli_train

    cli_train.register(sub)
    cli_eval.register(sub)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed as one line
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return int(func(args) or 0)
    except SmartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        words = list(sys.argv[1:] if argv is None else argv)
        if getattr(args, "cmd", None) == "pretrain":
            import shlex

            again = " ".join(shlex.quote(w) for w in words) + ("" if "--resume" in words else " --resume")
            print(f"error: interrupted; the last checkpoint is kept, continue with: smart {again}", file=sys.stderr)
        elif getattr(args, "cmd", None) == "book":
            print("error: interrupted; notebooks that finished are kept and are not run again: run the same command to go on",
                  file=sys.stderr)
        else:
            print("error: interrupted; nothing was written (results are written only when a study finishes)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
