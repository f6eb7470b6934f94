"""Settings of the QC stage; the root configuration embeds this model as its ``qc:`` section."""

from __future__ import annotations

from pydantic import Field, model_validator

from rtnode.section import Section


def _default_volumes() -> dict[str, tuple[float, float]]:
    # adult organ volumes (cc), wide enough for anatomy, narrow enough to catch a failed model
    return {"Liver": (600.0, 3500.0), "Kidney_L": (50.0, 400.0), "Kidney_R": (50.0, 400.0),
            "Spleen": (30.0, 1200.0), "Heart": (250.0, 1500.0), "Lung_L": (600.0, 4500.0),
            "Lung_R": (700.0, 5000.0), "Brain": (800.0, 2000.0), "Bladder": (20.0, 1200.0),
            "Prostate": (8.0, 200.0), "Parotid_L": (8.0, 80.0), "Parotid_R": (8.0, 80.0),
            "SpinalCord": (5.0, 150.0), "Esophagus": (5.0, 120.0)}


class QCConfig(Section):
    """What the qc stage checks and where a check turns from pass to warn to fail."""

    name_map: dict[str, str] = Field(
        default_factory=dict,
        description="auto-segmentation ROI name -> manual ROI name, for auto-vs-manual "
                    "comparison; names equal up to case, spaces and '_' match without it")
    organ_volume_cc: dict[str, tuple[float, float]] = Field(
        default_factory=_default_volumes,
        description="plausible [min, max] volume (cc) of auto-segmented organs, by ROI name "
                    "(case-insensitive glob)")
    dice_warn: float = Field(0.8, ge=0, le=1, description="auto-vs-manual Dice below this: warn")
    dice_fail: float = Field(0.5, ge=0, le=1, description="auto-vs-manual Dice below this: fail")
    hd95_warn_mm: float = Field(
        10.0, gt=0, description="auto-vs-manual 95th percentile surface distance above this: warn")
    dvh_tps_warn_pct: float = Field(
        3.0, gt=0, description="computed vs TPS DVH: largest volume difference (% of ROI) above "
                               "this warns")
    dvh_tps_fail_pct: float = Field(10.0, gt=0, description="... and above this fails")
    min_dose_coverage: float = Field(
        0.99, gt=0, le=1, description="fraction of a ROI's volume that must lie inside the dose "
                                      "grid (EXTERNAL ROIs excepted)")
    spacing_tolerance_mm: float = Field(
        0.01, gt=0, description="CT slice gaps may differ this much and still be 'uniform'")
    overlay_window: tuple[float, float] = Field(
        (-400.0, 400.0), description="CT window [low, high] in HU of the report's overlays")

    @model_validator(mode="after")
    def _thresholds(self) -> "QCConfig":
        if self.dice_fail > self.dice_warn:
            raise ValueError("dice_fail must not exceed dice_warn")
        if self.dvh_tps_warn_pct > self.dvh_tps_fail_pct:
            raise ValueError("dvh_tps_warn_pct must not exceed dvh_tps_fail_pct")
        return self
