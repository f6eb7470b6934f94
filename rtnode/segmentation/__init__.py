"""Auto-segmentation backends behind one interface, and the model registry that keeps them warm."""

from rtnode.lazy import lazy_exports

_EXPORTS = {
    "ModelWeightsMissing": "base", "SegmentationError": "base", "SegmentationResult": "base",
    "Segmenter": "base", "SegmentationConfig": "config", "CTSeriesError": "ct",
    "load_ct": "ct", "read_ct_folder": "ct", "ModelSpecError": "registry",
    "clear_cache": "registry", "get_segmenter": "registry", "loaded_models": "registry",
    "parse_spec": "registry", "segment": "registry",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
