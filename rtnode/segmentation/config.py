"""The ``segmentation:`` section of config.yaml."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from rtnode.section import Section


class SegmentationConfig(Section):
    """Auto-segmentation models, where their weights live and how much machine they may use."""

    default_model: str = Field(
        "builtin:body", description="model spec for courses no rule names one for: "
        "builtin:body, totalsegmentator:<task>, nnunet:<model folder>")
    totalseg_home: Path | None = Field(
        None, description="TotalSegmentator home (config.json, nnunet/results/ weights); "
        "null = $TOTALSEG_HOME_DIR or ~/.totalsegmentator")
    devices: list[str] = Field(
        default_factory=lambda: ["cpu"],
        description="devices for model inference, one gpu-queue slot each: cpu, cuda, cuda:1, mps")
    timeout_seconds: int = Field(3600, ge=1, description="one course's segmentation, seconds")
    min_island_voxels: int = Field(
        10, ge=1, description="connected pieces of a mask smaller than this are not contoured")
    nnunet_folds: list[int] | None = Field(
        None, description="nnU-Net folds to ensemble; null = every fold_N folder the model has")
    nnunet_checkpoint: str = Field(
        "checkpoint_final.pth", description="checkpoint file name inside each fold folder")
    threads: int = Field(
        1, ge=1, description="torch and preprocessing threads of one segmentation process")
    fast: bool = Field(False, description="TotalSegmentator: 3 mm models (quicker, coarser)")
    fastest: bool = Field(False, description="TotalSegmentator: 6 mm models")
    roi_subset: list[str] | None = Field(
        None, description="TotalSegmentator: only these ROIs (null = all of the task)")
    force_split: bool = Field(
        False, description="TotalSegmentator: always predict in 3 parts (less memory); "
        "switched on anyway for the retry after a memory error")
    body_threshold_hu: float = Field(
        -400.0, description="builtin:body: voxels above this CT number are tissue")

    @field_validator("devices")
    @classmethod
    def _devices(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one device (cpu, cuda, cuda:N, mps)")
        for d in v:
            if d not in ("cpu", "mps", "cuda", "gpu") and not (
                    d.startswith(("cuda:", "gpu:")) and d.split(":", 1)[1].isdigit()):
                raise ValueError(f"{d!r} is not a device (cpu, cuda, cuda:N, mps)")
        return v
