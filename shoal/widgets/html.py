"""Formatting shared by the widgets' live views and their static HTML snapshots.

The snapshots are what nbconvert, GitHub and a notebook whose kernel is gone
show: plain HTML with inline styles (no scripts, no external CSS), readable
even where a sanitizer strips the styles.
"""
from __future__ import annotations

import html
import math
from typing import Optional

# Colours for task names (timeline bars, legends).  Red is kept for failures.
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948",
           "#9c755f", "#ff9da7", "#86bcb6", "#a0cbe8", "#8cd17d", "#d4a6c8")
FAILED = "#d62728"
CANCELLED = "#9e9e9e"
OK = "#2e7d32"

FONT = ("font-family: var(--jp-ui-font-family, -apple-system, BlinkMacSystemFont, 'Segoe UI', "
        "Helvetica, Arial, sans-serif); font-size: 12px;")
BOX = (f"{FONT} border: 1px solid #d0d7de; border-radius: 6px; padding: 8px 10px; "
       f"max-width: 900px; background: #fff; color: #1f2328;")


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def color_for(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def count(n) -> str:
    """1234567 -> '1,234,567'."""
    return f"{int(n):,}"


def nbytes(n: Optional[float]) -> str:
    """Bytes for people: 0 B, 812 B, 1.5 KiB, 3.2 GiB."""
    if n is None:
        return "—"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def duration(seconds: Optional[float]) -> str:
    """Seconds for people: 840 µs, 12 ms, 3.40 s, 2:05, 1:02:03."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    s = max(0.0, float(seconds))
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1e3:.0f} ms"
    if s < 60:
        return f"{s:.2f} s" if s < 10 else f"{s:.1f} s"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    mnt, sec = divmod(rem, 60)
    return f"{h}:{mnt:02d}:{sec:02d}" if h else f"{mnt}:{sec:02d}"


def rate(per_second: Optional[float]) -> str:
    if not per_second:
        return "—"
    if per_second >= 100:
        return f"{per_second:,.0f}/s"
    if per_second >= 1:
        return f"{per_second:.1f}/s"
    return f"{per_second * 60:.1f}/min"


def meter(fraction: float, color: str, width: int = 160, height: int = 10,
          second: float = 0.0, second_color: str = FAILED) -> str:
    """A horizontal bar as two nested divs (an optional second segment follows the first)."""
    f1 = max(0.0, min(1.0, fraction))
    f2 = max(0.0, min(1.0 - f1, second))
    return (f'<div style="display:inline-block; vertical-align:middle; width:{width}px; '
            f'height:{height}px; background:#eaeef2; border-radius:{height // 2}px; '
            f'overflow:hidden; white-space:nowrap; font-size:0">'
            f'<div style="display:inline-block; height:100%; width:{f1 * 100:.2f}%; '
            f'background:{color}"></div>'
            f'<div style="display:inline-block; height:100%; width:{f2 * 100:.2f}%; '
            f'background:{second_color}"></div></div>')


def title_bar(title: str, note: str = "") -> str:
    return (f'<div style="font-weight:600; margin-bottom:6px">{esc(title)}'
            + (f' <span style="font-weight:400; color:#656d76">{esc(note)}</span>' if note else "")
            + "</div>")
