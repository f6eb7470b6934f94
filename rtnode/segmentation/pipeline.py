"""CT in, label masks (NIfTI) and an RTSTRUCT out: the whole segment step for one CT series,
shared by ``rtnode segment`` and the segment stage so that both write the same files."""

from __future__ import annotations

import json
import re
import shutil
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
    outputs = save_segmentation(result, image, spec, Path(out_dir) / "seg")
    outputs.seconds = time.monotonic() - start
    rs = rtstruct_from_segmentations([outputs.label_map], datasets, config)
    outputs.rtstruct = save_rtstruct(rs, Path(out_dir) / RTSTRUCT_NAME)
    return outputs


def save_segmentation(result: SegmentationResult, image: sitk.Image, spec: str,
                      seg_dir: Path) -> SegmentationOutputs:
    """Write a model's labels on the CT grid: labels.nii.gz, one <ROI>.nii.gz per ROI, and
    labels.json (model, value → name, colour, interpreted type) for the RTSTRUCT step."""
    if result.labels.shape != sitk.GetArrayViewFromImage(image).shape:
        raise RuntimeError(f"{spec} returned labels shaped {result.labels.shape} for a CT "
                           f"shaped {sitk.GetArrayViewFromImage(image).shape}")
    seg_dir.mkdir(parents=True, exist_ok=True)
    labels_path = seg_dir / LABELS_NAME
    dtype = np.uint8 if max(result.names, default=0) < 256 else np.uint16
    sitk.WriteImage(_image_like(result.labels.astype(dtype), image), str(labels_path), True)
    mask_paths = {}
    if list(result.names) == [1] and int(result.labels.max(initial=0)) <= 1:
        # one ROI labelled 1 (builtin:body): its mask file is the label file, byte for byte,
        # so it is copied rather than compressed a second time
        path = seg_dir / f"{safe_file_name(result.names[1])}.nii.gz"
        shutil.copyfile(labels_path, path)
        mask_paths[result.names[1]] = path
    else:
        for name, mask in result.masks().items():
            path = seg_dir / f"{safe_file_name(name)}.nii.gz"
            sitk.WriteImage(_image_like(mask.astype(np.uint8), image), str(path), True)
            mask_paths[name] = path
    types = result.types_by_name()
    label_map = seg_dir / "labels.json"
    label_map.write_text(json.dumps({
        "model": spec,
        "labels": {str(v): {"name": n, "color": list(result.colors.get(v, ())) or None,
                            "interpreted_type": types.get(n)}
                   for v, n in sorted(result.names.items())}}, indent=2))
    return SegmentationOutputs(rtstruct=seg_dir.parent / RTSTRUCT_NAME, labels=labels_path,
                               masks=mask_paths, label_map=label_map, result=result)


def rtstruct_from_segmentations(label_maps: Sequence[Path], ct_datasets: Sequence[Dataset],
                                config: SegmentationConfig) -> Dataset:
    """One RTSTRUCT holding the ROIs of every saved segmentation (labels.json + labels.nii.gz
    beside it); an ROI name found in several models keeps the last model's mask."""
    masks: dict[str, np.ndarray] = {}
    colors: dict[str, tuple[int, int, int]] = {}
    types: dict[str, str] = {}
    models = []
    for label_map in label_maps:
        info = json.loads(Path(label_map).read_text())
        models.append(info["model"])
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(Path(label_map).parent
                                                           / LABELS_NAME)))
        for value, entry in info["labels"].items():
            masks[entry["name"]] = labels == int(value)
            if entry.get("color"):
                colors[entry["name"]] = tuple(entry["color"])
            if entry.get("interpreted_type"):
                types[entry["name"]] = entry["interpreted_type"]
    return write_rtstruct(ct_datasets, masks, colors=colors, interpreted_types=types,
                          model=", ".join(models), min_island_voxels=config.min_island_voxels)
