"""Shared bits of the demos: the console and step messages."""

from __future__ import annotations

from rich.console import Console

console = Console(stderr=True)


def step(message: str) -> None:
    """Print one pipeline step."""
    console.print(f"[bold cyan]>>[/] {message}")
