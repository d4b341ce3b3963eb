"""The `minibit` command (also `python -m minibit`): the face, and the only place that parses
arguments.  Everything below it is plain functions; the library never prints.

One module per subcommand: ``minibit/cli/NAME.py`` holds ``HELP`` (one line for ``--help``),
``DESCRIPTION``, ``add_arguments(ap)`` and ``run(args, ap) -> int`` (call the library, print,
return the exit code); a subcommand that parses in stages (``bench``) defines
``main(argv) -> int`` instead.  To add a subcommand, write that module and add NAME to
``COMMANDS``.  Shared options and the parser live in ``_common``.  Bad arguments exit 2 with one line on stderr; a FormatError exits 1
with its message.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings

from .._errors import FormatError
from ._common import Parser

__all__ = ["main", "run_command", "command", "COMMANDS", "Parser"]

# The subcommands, in the order `minibit --help` lists them: NAME -> module minibit.cli.NAME
COMMANDS = ("generate", "chat", "convert", "bench", "dump", "compare", "vectors", "perplexity",
            "inspect", "serve")


def command(name: str):
    """The module of subcommand ``name`` (imported on first use: `minibit --help` stays fast)."""
    return importlib.import_module(f"{__name__}.{name}")


def run_command(name: str, argv) -> int:
    """Parse ``argv`` for subcommand ``name`` and run it; FormatError propagates (``main``
    turns it into one line and exit 1)."""
    mod = command(name)
    if hasattr(mod, "main"):
        return mod.main(list(argv))
    ap = Parser(prog=f"minibit {name}", description=mod.DESCRIPTION)
    mod.add_arguments(ap)
    return mod.run(ap.parse_args(list(argv)), ap)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = Parser(
        prog="minibit",
        description="minibit: a readable, exact reference for 1.58-bit (ternary) LLM inference.")
    ap.add_argument("--version", action="store_true", help="print the version and backend")
    ap.add_argument("command", nargs="?", choices=COMMANDS,
                    help="; ".join(f"{k}: {command(k).HELP}" for k in COMMANDS))
    args, rest = ap.parse_known_args(argv[:1] if argv and not argv[0].startswith("-") else argv)
    if args.version:
        from .._backend import backend
        from .._version import __version__
        print(f"minibit {__version__} ({backend()} backend)")
        return 0
    if args.command is None:
        ap.print_help()
        return 2
    show = warnings.showwarning
    warnings.showwarning = _one_line_warning
    try:
        return run_command(args.command, argv[1:])
    except FormatError as e:
        print(f"minibit {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`minibit generate ... | head`): stop quietly; point stdout at
        # /dev/null so the interpreter's final flush does not raise again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    finally:
        warnings.showwarning = show


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings on the command line: ``minibit: warning: ...``, one line, no source echo."""
    print(f"minibit: warning: {message}", file=file or sys.stderr)
