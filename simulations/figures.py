"""Writing figures: PNG files written atomically, so a killed run never leaves half a picture."""

from __future__ import annotations

import io
from pathlib import Path

from .results import atomic_write_bytes

__all__ = ["save_figure"]


def save_figure(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
