"""The data directory's lock: one ``sada run`` per data directory.

The embedded default keeps its SQLite database in the data directory; two
processes writing one SQLite file as two projectors would each think they own
every partition. The lock is an advisory ``flock`` on ``sada.lock``, released
by the kernel when the process ends, however it ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import IO

from sada.pipeline.domain.errors import SadaError

LOCK_NAME = "sada.lock"


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME
        self._file: IO[str] | None = None

    def acquire(self) -> DataDirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise SadaError(
                f"data directory {self.path.parent} is in use by sada run (pid {holder}); "
                "stop it, or give this one another --data-dir or SADA_DATA_DIR"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._file = f
        return self

    def release(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None
