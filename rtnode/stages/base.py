"""What a stage is: a name, a queue, what it needs, what it writes, a timeout, and a function.

Every stage module has the same shape — build a ``Stage`` and ``register`` it — so the runner can
plan, order, time out and retry any of them without knowing what they do. Physicists can add a
stage in a module of their own and list it under ``stages.plugins`` in the config.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from rtnode.courses.grouping import Member

Queue = Literal["gpu", "cpu"]


@dataclass
class StageContext:
    """Everything a stage function gets: the course revision, where to write, how big to be."""

    course_id: int
    patient_id: str
    revision: int
    members: list[Member]
    verdict: dict[str, Any]
    rule: dict[str, Any]
    storage_root: Path
    out_dir: Path
    footprint: Literal["normal", "small"] = "normal"
    part: str = ""
    upstream: dict[str, Path] = field(default_factory=dict)  # stage -> folder of its outputs
    parts: list[dict[str, Any]] = field(default_factory=list)  # for merge: part, state, reason
    config: Any = None
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("rtnode.stage"))

    def of(self, modality: str) -> list[Member]:
        return [m for m in self.members if m.modality == modality]

    def path(self, member: Member) -> Path:
        return self.storage_root / member.path


@dataclass(frozen=True)
class Stage:
    """A stage declaration.

    ``needs``: modalities the course must hold, else the stage is skipped with that reason.
    ``after``: stages whose outputs it needs; it starts as soon as those are done for the course,
    and is skipped when one of them fails or is skipped.
    ``uses``: stages whose outputs it reads when they exist (the dvh stage and the auto
    RTSTRUCT); it waits for them to finish, whatever their outcome.
    ``inputs``: modalities whose instances decide whether a new revision must rerun it (None: all).
    ``split``: fan-out — returns part names (e.g. one per ROI); each part then runs ``run`` as a
    task of its own on the same queue (``ctx.part`` says which), and once every part has
    finished, ``merge`` runs with ``ctx.parts``. This is how one heavy course fills the worker
    pool without a pool inside a task.
    """

    name: str
    queue: Queue
    run: Callable[[StageContext], Any]
    needs: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    uses: tuple[str, ...] = ()
    inputs: tuple[str, ...] | None = None
    writes: tuple[str, ...] = ()
    timeout: float | None = None
    description: str = ""
    split: Callable[[StageContext], list[str]] | None = None
    merge: Callable[[StageContext], Any] | None = None
    timeout_setting: Callable[[Any], float] | None = None  # reads it from the config
    #: the timeout of one part, from its name and the stage's timeout (a part holding several
    #: ROIs gets the time of each); None = the stage's timeout
    part_timeout: Callable[[str, float], float] | None = None


class StageSkipped(Exception):
    """Raised by a stage that finds nothing to do (e.g. no destination to send to): the run
    ends 'skipped' with this reason instead of 'failed'."""


REGISTRY: dict[str, Stage] = {}


def register(stage: Stage) -> Stage:
    REGISTRY[stage.name] = stage
    return stage


BUILTIN_MODULES = ("rtnode.stages.manifest", "rtnode.stages.segment", "rtnode.stages.rtstruct",
                   "rtnode.stages.send", "rtnode.stages.dvh", "rtnode.stages.radiomics",
                   "rtnode.stages.robustness", "rtnode.stages.qc")


def load_stages(plugins: tuple[str, ...] | list[str] = ()) -> dict[str, Stage]:
    """Import the built-in stage modules and the configured plugins (each registers itself)."""
    for module in (*BUILTIN_MODULES, *plugins):
        importlib.import_module(module)
    return REGISTRY


def stage_timeout(stage: Stage, config: Any, part: str = "") -> float:
    """stages.timeouts[name], else the stage's own config setting, else its declared
    timeout, else stages.default_timeout; for a part, scaled by the stage's ``part_timeout``."""
    seconds = _stage_timeout(stage, config)
    if part and stage.part_timeout is not None:
        return float(stage.part_timeout(part, seconds))
    return seconds


def _stage_timeout(stage: Stage, config: Any) -> float:
    if config is not None and stage.name in config.stages.timeouts:
        return float(config.stages.timeouts[stage.name])
    if config is not None and stage.timeout_setting is not None:
        return float(stage.timeout_setting(config))
    if stage.timeout is not None:
        return stage.timeout
    return float(config.stages.default_timeout) if config is not None else 1800.0
