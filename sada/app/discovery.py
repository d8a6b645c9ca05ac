"""Finding a running embedded broker through the data directory.

``sada run`` without ``--bootstrap`` writes its embedded broker's address to
``DATA_DIR/broker.json`` (with its own process id) and removes it on stopping;
client commands (``publish``, ``dlq``, ``topics``, ``simulate --publish``)
given no bootstrap read it, so that they reach the broker beside them. A file
left by a process that no longer runs is ignored.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

FILE = "broker.json"


def announce(data_dir: Path, bootstrap: str) -> None:
    path = data_dir / FILE
    tmp = path.with_name(f".{FILE}.{os.getpid()}")
    tmp.write_text(json.dumps({"bootstrap": bootstrap, "pid": os.getpid()}), "utf-8")
    tmp.replace(path)


def withdraw(data_dir: Path, bootstrap: str) -> None:
    """Remove the file if it is still this process's."""
    if running_bootstrap(data_dir) == bootstrap:
        with contextlib.suppress(OSError):
            (data_dir / FILE).unlink()


def running_bootstrap(data_dir: Path) -> str | None:
    """The bootstrap of the embedded broker a live ``sada run`` announced here, if any."""
    try:
        found = json.loads((data_dir / FILE).read_text("utf-8"))
        bootstrap, pid = str(found["bootstrap"]), int(found["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, someone else's
    return bootstrap
