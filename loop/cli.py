"""`evalloop` command line: register the commands (loop/commands/, one module each, with its
parser and handler), run the one asked for, map errors to exit codes.

Every exception that reaches `main()` becomes one paragraph on stderr (`evalloop: <kind>: ...`)
and one of these exit codes (docs/reliability.md has the same table); `--debug` or
EVALLOOP_DEBUG=1 prints the traceback too:

    0 ok                       1 `eval` thresholds missed (--min-pass-rate, ...)
    2 bad input: task, data, model, flags, paths (a directory, unreadable, read-only, port in use)
    3 the store cannot be opened or written     4 no space left while writing a file
    70 internal error (a bug)  75 locked, or a model endpoint still failing (try later)
    129 / 130 / 143 stopped by SIGHUP / SIGINT (Ctrl-C) / SIGTERM: finished work kept
    nightly adds 10 kept, 20 failed, 124 over budget (see `evalloop nightly --help`)
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
import traceback

from loop.core.openmp import wait_briefly

# Idle OpenMP threads spin 300,000 times by default: on a shared 2-core machine that made
# training 10-25x slower. Set before anything imports torch.
wait_briefly()

from loop.commands import (  # noqa: E402
    app,
    arena,
    bench,
    cycle,
    demo,
    evaluate,
    export,
    failures,
    generate,
    init,
    leaderboard,
    nightly,
    pairs,
    promote,
    rollback,
    schema,
    train,
)
from loop.core import stopping  # noqa: E402
from loop.core.errors import EvalloopError, StoreError  # noqa: E402

# The commands, in `evalloop --help` order: each module's make_parser(subparsers) and run(args).
COMMANDS = (init, evaluate, failures, generate, train, pairs, export, bench, arena, leaderboard,
            app, cycle, nightly, demo, promote, rollback, schema)


def _quiet_libraries() -> None:
    """Keep third-party chatter off the terminal; our own progress bars and tables remain."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


# ---------------------------------------------------------------------------- parser

def package_version() -> str:
    """The installed distribution's version, else the source tree's (`loop.__version__`)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("evalloop")
    except PackageNotFoundError:
        from loop import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evalloop", description="Evaluation-driven LoRA "
                                     "fine-tuning: evaluate, find failures, target, train, gate.")
    parser.add_argument("--verbose", "-v", action="store_true", help="show library logs")
    parser.add_argument("--debug", action="store_true",
                        help="print the traceback of an error too (or set EVALLOOP_DEBUG=1)")
    parser.add_argument("--version", action="version", version=f"evalloop {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.make_parser(sub).set_defaults(func=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        _quiet_libraries()
    debug = args.debug or os.environ.get("EVALLOOP_DEBUG", "") not in ("", "0")
    restore = stopping.install()
    try:
        from loop.core.launch import refuse_outside_launcher

        refuse_outside_launcher()  # every command opens the store: one writer, never N ranks
        return args.func(args)
    except SystemExit:
        raise
    except BaseException as exc:  # the one error path: one paragraph and a code from the table
        if debug:
            traceback.print_exception(exc, file=sys.stderr)
        kind, message, code = explain(exc)
        hint = (" Rerun with --debug (or EVALLOOP_DEBUG=1) for the traceback, and report it."
                if code == EXIT_INTERNAL and not debug else "")
        print(f"evalloop: {kind}: {message}{hint}", file=sys.stderr)
        return code
    finally:
        restore()


EXIT_BAD_INPUT, EXIT_STORE, EXIT_NO_SPACE, EXIT_INTERNAL = 2, 3, 4, 70
SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def explain(exc: BaseException) -> tuple[str, str, int]:
    """(kind, one-paragraph message, exit code) for any exception that reaches main()."""
    if isinstance(exc, KeyboardInterrupt) or stopping.received():
        exc = stopping.received() or exc  # a signal inside DuckDB or torch: still the signal
        name = getattr(exc, "signal_name", "SIGINT")
        return ("interrupted", f"stopped by {name}; finished work is kept (an unfinished "
                "evaluation is marked interrupted), rerun to resume.",
                getattr(exc, "exit_code", 130))
    if isinstance(exc, StoreError):
        return "store error", str(exc), EXIT_STORE
    if isinstance(exc, EvalloopError):
        return "error", str(exc), exc.exit_code
    if isinstance(exc, OSError):
        return os_error(exc)
    if type(exc).__module__.split(".")[0] in ("duckdb", "_duckdb"):
        return ("store error", f"the database failed: {str(exc).splitlines()[0]}. Work "
                "committed before this point is kept.", EXIT_STORE)
    if isinstance(exc, MemoryError):
        return ("error", "out of memory. Lower [generation] batch_size or [training] "
                "micro_batch_tokens, or use --limit.", EXIT_BAD_INPUT)
    text = str(exc).strip().splitlines()
    return ("internal error", f"{type(exc).__name__}: {text[0] if text else '(no message)'}. "
            "This is a bug in evalloop, not in your input.", EXIT_INTERNAL)


def os_error(exc: OSError) -> tuple[str, str, int]:
    """What an OSError means, in words: the path and its real cause."""
    what = exc.filename or "a file"
    if exc.errno in SPACE_ERRNOS:
        return ("error", f"no space left while writing {what} ({exc.strerror}). Work finished "
                "before this point is kept; free space and rerun to resume.", EXIT_NO_SPACE)
    causes = {errno.EISDIR: f"{what} is a directory, not a file",
              errno.ENOTDIR: f"a parent of {what} is a file, not a directory",
              errno.EACCES: f"permission denied on {what}",
              errno.EPERM: f"operation not permitted on {what}",
              errno.EROFS: f"{what} is on a read-only file system",
              errno.ENOENT: f"{what} does not exist",
              errno.EADDRINUSE: "the address or port is already in use by another process",
              errno.ENXIO: f"{what} is not a regular file (a FIFO or device with no reader)"}
    cause = causes.get(exc.errno, f"cannot use {what}: {exc.strerror or exc}")
    return "error", f"{cause}.", EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
