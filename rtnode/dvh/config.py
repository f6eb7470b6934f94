"""Settings of the DVH engine; the root configuration embeds this model as its ``dvh:`` section."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class DVHConfig(BaseModel):
    """How DVHs are computed and which metrics are reported for every ROI."""

    model_config = ConfigDict(extra="forbid")

    engine: Literal["rtnode", "dicompyler"] = Field(
        "rtnode",
        description="DVH engine: rtnode (sub-voxel, trilinear) or dicompyler (dicompyler-core "
                    "0.5.6 default mode, the independent reference).")
    dose_levels_pct: list[float] = Field(
        default_factory=lambda: [98.0, 95.0, 50.0, 2.0],
        description="Volume levels x (% of ROI volume) for which Dx% (Gy) is reported.")
    volume_levels_gy: list[float] = Field(
        default_factory=lambda: [5.0, 10.0, 20.0, 30.0, 40.0, 50.0],
        description="Dose levels x (Gy) for which VxGy is reported in cc and in % of the ROI.")
    bin_width_gy: float = Field(
        0.005, gt=0.0, le=0.01,
        description="Width of the cumulative DVH dose bins in Gy (at most 0.01 Gy).")
    prescription_gy: float | None = Field(
        None, gt=0.0,
        description="Prescription dose in Gy; overrides RTPLAN TargetPrescriptionDose when set.")
    samples_per_plane: int = Field(
        500, ge=100,
        description="In-plane sub-voxel samples aimed at over an ROI's largest cross-section; "
                    "small ROIs get finer sampling, large ones stop at max_sample_spacing_mm.")
    max_sample_spacing_mm: float = Field(
        2.5, gt=0.0,
        description="Coarsest in-plane sampling pitch in mm, reached by large ROIs such as BODY "
                    "(never coarser than the dose pixel).")
    min_sample_spacing_mm: float = Field(
        0.05, gt=0.0,
        description="Finest in-plane sampling pitch in mm, reached by very small ROIs.")
    sum: list[Literal["boost"]] = Field(
        default_factory=list,
        description="Plan roles added to the primary plan on a hint alone (a boost known by its "
                    "RTPlanLabel); plans the data relate (RTPlanRelationship PRIOR/CONCURRENT, a "
                    "TPS plan sum) need no rule. A rule's dose: {sum: [...]} overrides this.")
