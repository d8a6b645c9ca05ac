"""Subcommands of the ``sada`` CLI, one module each (see :mod:`sada.app.cli`)."""
