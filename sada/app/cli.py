"""The ``sada`` command line: one subcommand per module in :mod:`sada.app.commands`.

``main()`` wraps :func:`run`, which takes the arguments and the output streams
and returns an exit code, so every command is testable in-process. A
:class:`~sada.pipeline.domain.errors.SadaError` ends a command with its one-line reason on
stderr and exit code 1; a reader that stops reading (``| head``) ends it quietly.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from sada import __version__
from sada.app.logs import configure_logging
from sada.infra.settings import Settings
from sada.pipeline.domain.errors import SadaError

# Subcommand name -> module under sada.app.commands. Each module defines
# ``HELP``, ``add_arguments(parser)`` and ``run(args, stdout, stderr) -> int``.
COMMANDS: dict[str, str] = {
    "run": "run",
    "broker": "broker",
    "topics": "topics",
    "publish": "publish",
    "simulate": "simulate",
    "track": "track",
    "replay": "replay",
    "audit": "audit",
    "bench": "bench",
    "dlq": "dlq",
    "notifications": "notifications",
    "report": "report",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sada",
        description="Sada: submissions carried to the management level that can act on them.",
    )
    parser.add_argument("--version", action="version", version=f"sada {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(f"sada.app.commands.{module_name}")
        except ModuleNotFoundError as e:
            if e.name != f"sada.app.commands.{module_name}":
                raise
            continue
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def run(argv: Sequence[str], stdout: TextIO, stderr: TextIO) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as e:  # argparse exits on --help and on usage errors
        return int(e.code or 0)
    try:
        return int(args._module.run(args, stdout, stderr))
    except SadaError as e:
        print(f"sada {args.command}: {e}", file=stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def main() -> None:
    with contextlib.suppress(SadaError):  # a bad setting is the command's to report
        configure_logging(Settings.from_env())
    try:
        code = run(sys.argv[1:], sys.stdout, sys.stderr)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (``sada track CODE | head``): what it wanted it has.
        # Point stdout at /dev/null so that the interpreter's last flush is quiet too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 0
    sys.exit(code)


if __name__ == "__main__":
    main()
