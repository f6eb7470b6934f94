"""The one interface every segmentation backend offers: a CT image in, labels on its grid out.

Backends differ in everything else (weights, devices, resampling), so the stage that runs them,
the RTSTRUCT writer and the CLI only ever see ``Segmenter`` and ``SegmentationResult``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import SimpleITK as sitk


class SegmentationError(RuntimeError):
    """A model could not be loaded or run; the message says why in a physicist's terms."""


class ModelWeightsMissing(SegmentationError):
    """The model's weights are not installed where the configuration says they are."""


@dataclass
class SegmentationResult:
    """Labels on the CT grid: ``labels`` is shaped like ``GetArrayFromImage(ct)`` (slices,
    rows, columns); ``names`` maps label value → ROI name (0 is background, never listed)."""

    labels: np.ndarray
    names: dict[int, str]
    model: str
    colors: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    interpreted_types: dict[int, str] = field(default_factory=dict)

    def masks(self, include_empty: bool = True) -> dict[str, np.ndarray]:
        """ROI name → bool mask, in label order (labels sharing a name are united)."""
        out: dict[str, np.ndarray] = {}
        for value, name in sorted(self.names.items()):
            m = self.labels == value
            out[name] = out[name] | m if name in out else m
        return out if include_empty else {n: m for n, m in out.items() if m.any()}

    def colors_by_name(self) -> dict[str, tuple[int, int, int]]:
        return {self.names[v]: c for v, c in self.colors.items() if v in self.names}

    def types_by_name(self) -> dict[str, str]:
        return {self.names[v]: t for v, t in self.interpreted_types.items() if v in self.names}


@runtime_checkable
class Segmenter(Protocol):
    """A loaded-once, called-many model. ``load()`` is idempotent and does the expensive part
    (weights onto the device); ``predict`` may be called for course after course.

    ``small_footprint`` asks for the slower, leaner path after a memory error (TotalSegmentator
    force_split, nnU-Net without keeping everything on the device)."""

    spec: str

    def load(self) -> None: ...

    def predict(self, image: sitk.Image, small_footprint: bool = False) -> SegmentationResult: ...
