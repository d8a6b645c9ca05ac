"""A small progress line for long commands: count, rate, ETA; a few updates a second at most."""

from __future__ import annotations

import time
from typing import TextIO


class Progress:
    def __init__(
        self, out: TextIO, label: str, total: int | None = None, interval: float = 0.5
    ) -> None:
        self.out = out
        self.label = label
        self.total = total
        self.interval = interval
        self.count = 0
        self.started = time.monotonic()
        self._last = 0.0

    def advance(self, n: int = 1) -> None:
        self.count += n
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._print(now, final=False)

    def done(self) -> None:
        self._print(time.monotonic(), final=True)

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.count / elapsed if elapsed > 0 else 0.0

    def _print(self, now: float, final: bool) -> None:
        elapsed = max(now - self.started, 1e-9)
        rate = self.count / elapsed
        parts = [f"{self.label}: {self.count:,}"]
        if self.total:
            parts[0] += f"/{self.total:,} ({100 * self.count / self.total:.0f}%)"
        parts.append(f"{rate:,.0f}/s")
        if self.total and not final and rate > 0:
            parts.append(f"ETA {max(0.0, (self.total - self.count) / rate):.0f}s")
        if final:
            parts.append(f"in {elapsed:.1f}s")
        end = "\n" if final else "\r"
        print("  ".join(parts), file=self.out, end=end, flush=True)
