"""Which pyradiomics parameter file applies: the shipped one per modality, or the site's own."""

from __future__ import annotations

from pathlib import Path

import yaml

SHIPPED = Path(__file__).parent / "params"


class ParamsError(ValueError):
    """A parameter file is missing or not a pyradiomics parameter mapping."""


def params_path(modality: str, params_ct: Path | None = None,
                params_mr: Path | None = None) -> Path:
    """MR images use the MR file; every other modality (CT, PT) the CT file."""
    chosen = params_mr if modality.upper() == "MR" else params_ct
    path = Path(chosen) if chosen is not None else SHIPPED / (
        "mr.yaml" if modality.upper() == "MR" else "ct.yaml")
    if not path.is_file():
        raise ParamsError(f"pyradiomics parameter file {path} not found")
    return path


def load_params(path: Path) -> dict:
    """The parameter file as a mapping, checked enough to give a readable error early."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: a pyradiomics parameter file is a mapping with setting, "
                          f"imageType and featureClass")
    unknown = set(data) - {"setting", "imageType", "featureClass", "voxelSetting"}
    if unknown:
        raise ParamsError(f"{path}: unknown top-level key(s) {', '.join(sorted(unknown))}")
    return data


def small_footprint(params: dict) -> dict:
    """The same extraction with less memory: the image is cropped to the ROI before it is
    resampled (pyradiomics' preCrop) and only the original image is used (no LoG/wavelet
    copies of the volume)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in params.items()}
    out["imageType"] = {"Original": {}}
    out.setdefault("setting", {})["preCrop"] = True
    return out
