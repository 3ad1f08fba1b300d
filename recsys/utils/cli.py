"""One rule for the entry points' errors: a problem with the user's setup or input is one line.

``python -m recsys.{train,index,recommend,serve,data.prepare}`` wrap their job in
:func:`user_errors`: a missing file or run, a provenance mismatch or bad data ends the command with
``<prog>: <Error>: <message>`` (the message names the command that fixes it) and exit status 1,
instead of a traceback. ``HYDRA_FULL_ERROR=1`` keeps the traceback (for bug reports). Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import contextmanager

from recsys.data.schema import DataError
from recsys.utils.artifacts import ProvenanceError



def doc_on_help(doc: str | None, argv: list[str] | None = None) -> None:
    """Print the entry point's docstring before Hydra's ``--help`` (config groups and the composed
    config), so ``python -m recsys.<cmd> --help`` starts with what the command does and how to call it.
    The docstring stays the one place that says so."""
    argv = sys.argv[1:] if argv is None else argv
    if doc and ("--help" in argv or "-h" in argv):
        print(doc.strip() + "\n")


class ScriptHelp(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """A script's ``--help``: its docstring as written, then every optional flag with its default
    (a required flag has none to show)."""

    def _get_help_string(self, action):
        return action.help if action.required else super()._get_help_string(action)


class UsageError(ValueError):
    """A command given options that do not go together (the message says which to give)."""


USER_ERRORS: tuple[type[BaseException], ...] = (ProvenanceError, DataError, FileNotFoundError, UsageError)


def _user_error(e: BaseException, kinds: tuple) -> BaseException | None:
    """``e`` or the first of its causes that is a user error (Hydra's instantiate wraps them)."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, kinds):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


@contextmanager
def user_errors(prog: str, extra: tuple[type[BaseException], ...] = ()):
    try:
        yield
    except Exception as e:
        found = _user_error(e, (*USER_ERRORS, *extra))
        if found is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        raise SystemExit(f"{prog}: {type(found).__name__}: {found}") from None
