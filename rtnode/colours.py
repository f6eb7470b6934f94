"""ROI colours shared by every figure: the RTSTRUCT's ROIDisplayColor where it has one (so an
ROI has the same colour in dvh.png, in the QC report and in the TPS), else a palette colour that
no other ROI of the same figure has."""

from __future__ import annotations

import colorsys
from typing import Any


def distinct_colours(n: int) -> list[tuple[float, float, float]]:
    """n distinct colours (0..1 RGB) for ROIs without ROIDisplayColor: golden-ratio hues at two
    lightness levels, so that 30+ ROIs never repeat a colour as tab10/tab20 do."""
    out = []
    for k in range(n):
        h = (0.13 + k * 0.618033988749895) % 1.0
        light = 0.5 if k % 2 == 0 else 0.36
        out.append(colorsys.hls_to_rgb(h, light, 0.85))
    return out


def display_colour(value: Any) -> tuple[int, int, int] | None:
    """ROIDisplayColor as three 0..255 integers; None when absent or malformed."""
    try:
        rgb = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        return None
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        return None
    return rgb  # type: ignore[return-value]
