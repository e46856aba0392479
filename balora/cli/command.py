"""Running a command line: its result printed, a user error answered with one line and exit status 2.

A user error is an input the person at the command line can fix (a missing file, a bad value, an
adapter on the wrong base): it is reported as `error: <message>` on stderr, without a traceback. Any
other exception is a bug or a failure of the machine and keeps its traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# What a person at the command line can fix: a bad value or file (ValueError), a missing or unreadable
# path, a model id that does not resolve (transformers raises OSError for every such case), a full disk.
# KeyError is left out on purpose: its message is only the key.
# KeyError (a missing field of a data file or config) is reported by its key alone.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, KeyError)


class RunFailed(RuntimeError):
    """A run that cannot go on (its loss diverged, ...): one line and exit status 1, no traceback."""


def run_command(
    main: Callable[[list[str]], Any],
    report: Callable[[Any], str] | None = None,
    user_errors: tuple[type[BaseException], ...] = (),
    argv: list[str] | None = None,
    basic_logging: bool = True,
) -> int:
    """Run `main(argv)` as a command line and return its exit status.

    Args:
        main: the command's `main(argv)`.
        report: turns main's result into the line printed on success (None: print nothing).
        user_errors: further exception types that are user errors for this command (beside USER_ERRORS).
        argv: the arguments (default: this process's).
        basic_logging: configure INFO logging first (False: the command sets up its own, per rank).

    Returns:
        0 on success, 2 on a user error, 1 on a failed run (each one line on stderr). argparse's own
        usage errors exit 2 as well.
    """
    if basic_logging:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        result = main(sys.argv[1:] if argv is None else argv)
    except (*USER_ERRORS, *user_errors, RunFailed) as error:
        text = error.args[0] if isinstance(error, KeyError) and error.args else error
        message = " ".join(str(text).split()) or type(error).__name__
        print(f"error: {message}", file=sys.stderr)
        return 1 if isinstance(error, RunFailed) else 2
    if report is not None:
        print(report(result))
    return 0


def project_root() -> Path:
    """The checkout holding this package when it runs from one, else the working directory.

    Default folders (results/, results/figures/) are taken from here, so that they do not point into
    site-packages when the package is installed.
    """
    checkout = Path(__file__).resolve().parents[2]
    return checkout if (checkout / "pyproject.toml").is_file() else Path.cwd()
