"""The problems a user can fix, each with the exit status the `malaria` command ends with.

The CLI and the notebooks print the message as one sentence (what is wrong, what to do) instead of a
traceback; `cli.main` is the one place that turns an error into its exit status. The README's table of
exit statuses is checked against EXIT_STATUSES by tests/test_cli.py.
"""

from __future__ import annotations

PARTIAL = 6  # the command did its work but left out some inputs it could not read (each one named)
INTERRUPTED = 130  # Ctrl-C, as shells report it (128 + SIGINT)

EXIT_STATUSES = {
    0: "done",
    1: "an unexpected error (a Python traceback): a bug, please report it",
    2: "the command line is wrong: an unknown option, profile, model or recipe setting",
    3: "an input cannot be used: a path that is missing or unreadable, a wrong layout, a damaged or tampered file",
    4: "the network failed: a download that could not start or broke off (run the same command again to resume)",
    5: "existing work is in the way: a folder holds another run, split or data, or another fetch is running",
    PARTIAL: "done, but some files could not be read: each is named, the rest were used",
    INTERRUPTED: "interrupted (Ctrl-C): run the same command again to continue",
}


class MalariaError(Exception):
    """A problem with the user's input or environment, explained in one sentence."""

    exit_status = 3


class UsageError(MalariaError):
    """The command or call asks for something that does not exist (an option, profile, model, setting)."""

    exit_status = 2


class NetworkError(MalariaError):
    """A download could not start or broke off; what arrived is kept for the next attempt."""

    exit_status = 4


class InTheWay(MalariaError):
    """Earlier work occupies the target (another run, split or data set, or a fetch in progress); nothing was
    changed, and --force or another folder is the way on."""

    exit_status = 5
