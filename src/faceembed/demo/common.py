"""Shared bits of the demos: the console, step messages and per-step wall times."""

from __future__ import annotations

import time

from rich.console import Console

console = Console(stderr=True)


class StepTimer:
    """Prints each pipeline step and records its wall time (``seconds``: step message -> seconds)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._current: tuple[str, float] | None = None

    def __call__(self, message: str) -> None:
        self.stop()
        step(message)
        self._current = (message, time.perf_counter())

    def stop(self) -> dict[str, float]:
        """End the current step; returns every step's seconds so far."""
        if self._current is not None:
            message, start = self._current
            self.seconds[message] = round(time.perf_counter() - start, 1)
            self._current = None
        return self.seconds


def step(message: str) -> None:
    """Print one pipeline step."""
    console.print(f"[bold cyan]>>[/] {message}")
