"""The base of every configuration section, in a module of its own so that each engine's
settings model (DVH, segmentation, radiomics, QC) can build on it and be embedded in the root
configuration without an import cycle."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Unknown keys are errors: a misspelt key silently ignored is a setting silently lost."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
