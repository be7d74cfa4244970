"""Showing results in the cell: one bundle with HTML for the notebook and text for terminals."""

from __future__ import annotations

from typing import Any


def show(text: str, html: str | None = None) -> None:
    """Display ``text`` (and ``html`` where the front end renders it) in the current cell."""
    from IPython.display import display

    bundle: dict[str, Any] = {"text/plain": text}
    if html is not None:
        bundle["text/html"] = html
    display(bundle, raw=True)
