"""Auto-segmentation backends behind one interface, and the model registry that keeps them warm."""

from rtnode.segmentation.base import (
    ModelWeightsMissing,
    SegmentationError,
    SegmentationResult,
    Segmenter,
)
from rtnode.segmentation.config import SegmentationConfig
from rtnode.segmentation.ct import CTSeriesError, load_ct, read_ct_folder
from rtnode.segmentation.registry import (
    ModelSpecError,
    clear_cache,
    get_segmenter,
    loaded_models,
    parse_spec,
    segment,
)

__all__ = [
    "CTSeriesError", "ModelSpecError", "ModelWeightsMissing", "SegmentationConfig",
    "SegmentationError", "SegmentationResult", "Segmenter", "clear_cache", "get_segmenter",
    "load_ct", "loaded_models", "parse_spec", "read_ct_folder", "segment",
]
