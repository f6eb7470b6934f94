"""CT in, label masks (NIfTI) and an RTSTRUCT out: the whole segment step for one CT series,
shared by ``rtnode segment`` and the segment stage so that both write the same files."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset

from rtnode.rtstruct.writer import save_rtstruct, write_rtstruct
from rtnode.segmentation.base import SegmentationResult
from rtnode.segmentation.config import SegmentationConfig
from rtnode.segmentation.ct import load_ct
from rtnode.segmentation.registry import parse_spec, segment

RTSTRUCT_NAME = "rtstruct_auto.dcm"
LABELS_NAME = "labels.nii.gz"


@dataclass
class SegmentationOutputs:
    """Where everything went, and how long the model took."""

    rtstruct: Path
    labels: Path
    masks: dict[str, Path] = field(default_factory=dict)
    label_map: Path | None = None
    seconds: float = 0.0
    result: SegmentationResult | None = None


def safe_file_name(name: str) -> str:
    """An ROI name as a file name: letters, digits, '.', '-', '_' kept, the rest '_'."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).strip("._") or "roi"


def _image_like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    img = sitk.GetImageFromArray(array)
    img.CopyInformation(reference)
    return img


def segment_series(source: Path | str | Iterable[Path | str] | Sequence[Dataset], out_dir: Path,
                   spec: str | None = None, config: SegmentationConfig | None = None,
                   device: str | None = None) -> SegmentationOutputs:
    """Segment one CT series and write under out_dir: ``seg/labels.nii.gz`` (all labels),
    ``seg/<ROI>.nii.gz`` (one binary mask per ROI), ``seg/labels.json`` (value → name, colour)
    and ``rtstruct_auto.dcm``."""
    config = config or SegmentationConfig()
    spec = spec or config.default_model
    parse_spec(spec)  # a misspelt model fails before the CT is read
    image, datasets = load_ct(source)
    start = time.monotonic()
    result = segment(image, spec, config, device)
    seconds = time.monotonic() - start
    if result.labels.shape != sitk.GetArrayViewFromImage(image).shape:
        raise RuntimeError(f"{spec} returned labels shaped {result.labels.shape} for a CT "
                           f"shaped {sitk.GetArrayViewFromImage(image).shape}")
    out_dir = Path(out_dir)
    seg_dir = out_dir / "seg"
    seg_dir.mkdir(parents=True, exist_ok=True)
    labels_path = seg_dir / LABELS_NAME
    dtype = np.uint8 if max(result.names, default=0) < 256 else np.uint16
    sitk.WriteImage(_image_like(result.labels.astype(dtype), image), str(labels_path), True)
    masks = result.masks()
    mask_paths = {}
    for name, mask in masks.items():
        path = seg_dir / f"{safe_file_name(name)}.nii.gz"
        sitk.WriteImage(_image_like(mask.astype(np.uint8), image), str(path), True)
        mask_paths[name] = path
    label_map = seg_dir / "labels.json"
    label_map.write_text(json.dumps({
        "model": spec,
        "labels": {str(v): {"name": n, "color": list(result.colors.get(v, ())) or None}
                   for v, n in sorted(result.names.items())}}, indent=2))
    rs = write_rtstruct(datasets, masks, colors=result.colors_by_name(),
                        interpreted_types=result.types_by_name(), model=spec,
                        min_island_voxels=config.min_island_voxels)
    rtstruct = save_rtstruct(rs, out_dir / RTSTRUCT_NAME)
    return SegmentationOutputs(rtstruct=rtstruct, labels=labels_path, masks=mask_paths,
                               label_map=label_map, seconds=seconds, result=result)
