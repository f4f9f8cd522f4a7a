"""One progress bar style for every long loop (rich): label, bar, done / total, time left."""

from __future__ import annotations

from typing import Any


def progress_bar(enabled: bool, total: int, label: str) -> tuple[Any, Any]:
    """A ``rich`` Progress (not started; use it as a context manager) and its one task of ``total`` steps."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    prog = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    disable=not enabled, transient=False)
    return prog, prog.add_task(label, total=total)
