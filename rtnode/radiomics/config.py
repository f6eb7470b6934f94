"""Settings of the radiomics and robustness stages; the root configuration embeds this model as
its ``radiomics:`` section. Every field has a default, so a site without the section still runs."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from rtnode.section import Section


class Perturbation(Section):
    """One segmentation perturbation of the robustness analysis."""

    name: str = Field(..., description="column label, e.g. 'vol-15'")
    volume_change_pct: float = Field(
        0.0, ge=-90.0, le=300.0,
        description="target change of ROI volume in % by erosion (<0) or dilation (>0)")
    shift_mm: tuple[float, float, float] = Field(
        (0.0, 0.0, 0.0), description="translation of the mask in patient x, y, z (mm)")
    noise_hu: float = Field(0.0, ge=0.0,
                            description="standard deviation of Gaussian noise added to the image")


def _default_perturbations() -> list[Perturbation]:
    return [Perturbation(name=f"vol{v:+d}" if v else "vol0", volume_change_pct=float(v))
            for v in (-30, -15, 0, 15, 30)]


class RobustnessConfig(Section):
    """The optional robustness stage: features re-extracted on perturbed segmentations."""

    roi_patterns: list[str] = Field(
        default_factory=lambda: ["GTV*", "CTV*", "PTV*"],
        description="ROI name glob patterns (case-insensitive) that are perturbed")
    perturbations: list[Perturbation] = Field(
        default_factory=_default_perturbations,
        description="perturbations applied to every matching ROI; include an unperturbed one")
    icc_threshold: float = Field(
        0.9, ge=0.0, le=1.0,
        description="a feature with ICC(2,1) at or above this is 'robust' (Koo & Li: 0.9 = "
                    "excellent reliability)")
    seed: int = Field(0, description="random seed of the noise perturbations (reproducible runs)")

    @model_validator(mode="after")
    def _names(self) -> "RobustnessConfig":
        names = [p.name for p in self.perturbations]
        if len(set(names)) != len(names):
            raise ValueError("perturbation names must be unique")
        if len(names) < 2:
            raise ValueError("at least two perturbations are needed for an ICC")
        return self


class RadiomicsConfig(Section):
    """pyradiomics feature extraction per ROI, one cpu-queue task per ROI."""

    params_ct: Path | None = Field(
        None, description="pyradiomics parameter file for CT; null = the shipped ct.yaml")
    params_mr: Path | None = Field(
        None, description="pyradiomics parameter file for MR; null = the shipped mr.yaml")
    sources: list[str] = Field(
        default_factory=lambda: ["manual", "auto"],
        description="which structure sets: manual (received RTSTRUCTs), auto (auto-segmentation)")
    skip_rois: list[str] = Field(
        default_factory=lambda: ["BODY", "External*", "EXTERNAL*", "Couch*", "*Support*",
                                 "z_*", "*ring*"],
        description="ROI name glob patterns (case-insensitive) never extracted")
    min_voxels: int = Field(
        27, ge=1, description="ROIs with fewer voxels on the image grid are skipped (too small "
                              "for texture)")
    max_voxels: int = Field(
        5_000_000, ge=1, description="ROIs with more voxels are skipped (time and memory bound)")
    roi_timeout_seconds: float = Field(
        600.0, gt=0, description="one ROI's extraction is stopped after this many seconds")
    robustness: RobustnessConfig = Field(default_factory=RobustnessConfig)

    @field_validator("sources")
    @classmethod
    def _sources(cls, v: list[str]) -> list[str]:
        bad = sorted(set(v) - {"manual", "auto"})
        if bad:
            raise ValueError(f"unknown source(s) {', '.join(bad)}; use manual and/or auto")
        return v

    @model_validator(mode="after")
    def _limits(self) -> "RadiomicsConfig":
        if self.min_voxels > self.max_voxels:
            raise ValueError("min_voxels is larger than max_voxels")
        return self
