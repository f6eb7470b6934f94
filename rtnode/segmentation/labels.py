"""Label value → ROI name, colour and RT ROI Interpreted Type for a model.

nnU-Net's dataset.json names its labels ({"background": 0, "liver": 1}); a clinic usually wants
its own ROI names (TG-263) and colours. A YAML map, given explicitly or found as
``rtnode_labels.yaml`` in the model folder, overrides them::

    1: Liver                      # just a name
    2: {name: Kidney_L, color: [255, 128, 0], type: ORGAN}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from rtnode.segmentation.base import SegmentationError

LABEL_MAP_FILE = "rtnode_labels.yaml"


@dataclass
class LabelMap:
    names: dict[int, str]
    colors: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    interpreted_types: dict[int, str] = field(default_factory=dict)


def from_dataset_json(labels: Mapping[str, Any]) -> LabelMap:
    """dataset.json "labels": name → value (or a list of values for region-based models,
    whose written value is the last)."""
    names: dict[int, str] = {}
    for name, value in labels.items():
        v = int(value[-1] if isinstance(value, (list, tuple)) else value)
        if v != 0:
            names[v] = str(name)
    return LabelMap(names)


def read_yaml_map(path: Path, base: LabelMap | None = None) -> LabelMap:
    """The YAML map laid over base (values not in the YAML keep base's names)."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SegmentationError(f"label map {path} cannot be read: {exc}") from exc
    if not isinstance(data, dict):
        raise SegmentationError(f"label map {path} must map label values to ROI names")
    out = LabelMap(dict(base.names) if base else {}, dict(base.colors) if base else {},
                   dict(base.interpreted_types) if base else {})
    for key, entry in data.items():
        try:
            value = int(key)
        except (TypeError, ValueError):
            raise SegmentationError(f"label map {path}: key {key!r} is not a label value") from None
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict) or not entry.get("name"):
            raise SegmentationError(f"label map {path}: label {value} needs a name")
        out.names[value] = str(entry["name"])
        if "color" in entry:
            color = entry["color"]
            if not (isinstance(color, list) and len(color) == 3
                    and all(isinstance(c, int) and 0 <= c <= 255 for c in color)):
                raise SegmentationError(f"label map {path}: colour of label {value} must be "
                                        f"[R, G, B] with 0-255 integers")
            out.colors[value] = tuple(color)
        if "type" in entry:
            out.interpreted_types[value] = str(entry["type"]).upper()
    return out
