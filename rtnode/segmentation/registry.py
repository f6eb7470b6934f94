"""Model specs → loaded segmenters, kept warm for the life of the worker process.

A spec is ``<backend>:<target>``: ``builtin:body``, ``totalsegmentator:<task>`` (e.g.
``totalsegmentator:total``), ``nnunet:<model folder>``. Loading a model (weights onto a device,
network built) costs seconds to minutes, predicting one course often less, so the worker loads
each (spec, device, options) once and reuses it for every later course.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from rtnode.limits import is_memory_error
from rtnode.segmentation.base import SegmentationError, SegmentationResult, Segmenter
from rtnode.segmentation.config import SegmentationConfig

log = logging.getLogger(__name__)

BACKENDS = ("builtin", "totalsegmentator", "nnunet")
class ModelSpecError(ValueError):
    """A model spec that does not name a known backend and target."""


@dataclass(frozen=True)
class ModelSpec:
    backend: str
    target: str

    def __str__(self) -> str:
        return f"{self.backend}:{self.target}"


def parse_spec(spec: str) -> ModelSpec:
    """'totalsegmentator:total' → ModelSpec('totalsegmentator', 'total'); the error lists the
    accepted forms."""
    backend, sep, target = spec.strip().partition(":")
    backend = backend.strip().lower()
    target = target.strip()
    if not sep or backend not in BACKENDS or not target:
        raise ModelSpecError(f"{spec!r} is not a model spec; use builtin:body, "
                             f"totalsegmentator:<task> or nnunet:<model folder>")
    if backend == "builtin" and target != "body":
        raise ModelSpecError(f"{spec!r}: the only builtin model is builtin:body")
    return ModelSpec(backend, target)


_cache: dict[tuple, Segmenter] = {}
_lock = threading.Lock()


def _build(spec: ModelSpec, config: SegmentationConfig, device: str) -> Segmenter:
    if spec.backend == "builtin":
        from rtnode.segmentation.body import BodySegmenter
        return BodySegmenter(threshold_hu=config.body_threshold_hu)
    if spec.backend == "totalsegmentator":
        from rtnode.segmentation.totalseg import TotalSegmentatorSegmenter
        return TotalSegmentatorSegmenter(
            task=spec.target, home=config.totalseg_home, device=device, fast=config.fast,
            fastest=config.fastest, roi_subset=config.roi_subset,
            force_split=config.force_split, threads=config.threads)
    from rtnode.segmentation.nnunet import NNUNetSegmenter
    return NNUNetSegmenter(Path(spec.target), device=device, folds=config.nnunet_folds,
                           checkpoint=config.nnunet_checkpoint, threads=config.threads)


def _options_key(spec: ModelSpec, config: SegmentationConfig) -> str:
    """The settings that change what a loaded model is; others (timeouts...) do not reload it."""
    fields = {"builtin": ("body_threshold_hu",),
              "totalsegmentator": ("totalseg_home", "fast", "fastest", "roi_subset",
                                   "force_split", "threads"),
              "nnunet": ("nnunet_folds", "nnunet_checkpoint", "threads")}[spec.backend]
    return config.model_dump_json(include=set(fields))


def get_segmenter(spec: str, config: SegmentationConfig | None = None,
                  device: str | None = None) -> Segmenter:
    """The loaded segmenter for spec on device, built and loaded on first use only."""
    config = config or SegmentationConfig()
    parsed = parse_spec(spec)
    device = device or config.devices[0]
    key = (str(parsed), device, _options_key(parsed, config))
    with _lock:
        seg = _cache.get(key)
        if seg is None:
            seg = _build(parsed, config, device)
            log.info("loading model %s on %s", parsed, device)
            seg.load()
            _cache[key] = seg
        return seg


def loaded_models() -> list[str]:
    """Specs currently warm in this process (for logs and the worker's status)."""
    return [k[0] for k in _cache]


def clear_cache() -> None:
    """Forget every loaded model (frees their memory once nothing else holds them)."""
    with _lock:
        _cache.clear()


def _free_device_memory() -> None:
    import gc
    gc.collect()
    try:
        import torch
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def segment(image: sitk.Image, spec: str | Segmenter | None = None,
            config: SegmentationConfig | None = None,
            device: str | None = None) -> SegmentationResult:
    """Segment a CT with the (warm) model for spec (or a segmenter given directly). A memory
    error is retried once with the segmenter's small-footprint path; a second one fails with
    both reasons."""
    config = config or SegmentationConfig()
    if isinstance(spec, str) or spec is None:
        spec = spec or config.default_model
        segmenter = get_segmenter(spec, config, device)
    else:
        segmenter = spec
        segmenter.load()
        spec = segmenter.spec
    try:
        return segmenter.predict(image, small_footprint=False)
    except Exception as first:  # noqa: BLE001 - only memory errors are retried
        if not is_memory_error(first):
            raise
        log.warning("%s ran out of memory (%s); retrying with a smaller footprint", spec, first)
        _free_device_memory()
        try:
            return segmenter.predict(image, small_footprint=True)
        except Exception as second:  # noqa: BLE001
            if is_memory_error(second):
                raise SegmentationError(
                    f"{spec} ran out of memory twice, also with the smaller footprint "
                    f"({first}; then {second}); use a device with more memory or a fast/"
                    f"fastest model") from second
            raise
