"""totalsegmentator:<task> — TotalSegmentator's own Python API, in-process, offline.

Weights come from a configured home folder (``segmentation.totalseg_home``, else
$TOTALSEG_HOME_DIR, else ~/.totalsegmentator) laid out as TotalSegmentator downloads them:
``<home>/nnunet/results/<DatasetNNN_...>/<trainer>__nnUNetPlans__3d_fullres/fold_0/...``. A
missing model folder is reported before TotalSegmentator would try to download it; its usage
statistics are switched off in ``<home>/config.json``.

TotalSegmentator builds a fresh nnU-Net predictor for every call. Its predictor class is replaced,
once per process, by one that keeps each loaded model (network, weights, plans) and hands it to
every later predictor for the same folder, so a worker reads each checkpoint once, not per course.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import SimpleITK as sitk

from rtnode.segmentation.base import ModelWeightsMissing, SegmentationError, SegmentationResult
from rtnode.segmentation.nnunet import ML_EXTRA_HINT, guard_trainer_lookup, import_torch

log = logging.getLogger(__name__)

WEIGHTS_HELP = "see docs/SEGMENTATION.md: installing model weights offline"
PREDICTOR_STATE = ("plans_manager", "configuration_manager", "list_of_parameters", "network",
                   "dataset_json", "trainer_name", "allowed_mirroring_axes", "label_manager")

#: (model folder, folds, checkpoint) → the loaded predictor state, for this process
_warm: dict[tuple, dict] = {}
#: how many times each model folder was actually read from disk (tests and logs)
load_counts: dict[str, int] = {}


def default_home() -> Path:
    if "TOTALSEG_HOME_DIR" in os.environ:
        return Path(os.environ["TOTALSEG_HOME_DIR"])
    return Path.home() / ".totalsegmentator"


def statistics_off(home: Path) -> None:
    """config.json with send_usage_stats false (created when missing, other keys kept)."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.json"
    config = {}
    if path.exists():
        try:
            config = json.loads(path.read_text())
        except ValueError:
            config = {}
    config.setdefault("totalseg_id", "totalseg_rtnode")
    config.setdefault("prediction_counter", 0)
    config.update(send_usage_stats=False, statistics_disclaimer_shown=True)
    path.write_text(json.dumps(config, indent=4))


def point_nnunet_at(weights: Path) -> None:
    """nnU-Net finds models through nnUNet_results (and wants raw/preprocessed set); nnU-Net
    2.8 reads these variables at every use, so setting them here is enough."""
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[var] = str(weights)


def install_warm_predictor() -> None:
    """Make TotalSegmentator's predictor reuse loaded models (once per process)."""
    import totalsegmentator.nnunet as ts_nnunet

    base = ts_nnunet.nnUNetPredictor
    if getattr(base, "_rtnode_warm", False):
        return

    class WarmPredictor(base):  # type: ignore[misc, valid-type]
        _rtnode_warm = True

        def initialize_from_trained_model_folder(self, model_training_output_dir,
                                                 use_folds, checkpoint_name="checkpoint_final.pth"):
            folder = str(Path(model_training_output_dir).resolve())
            key = (folder, tuple(use_folds) if use_folds is not None else None, checkpoint_name)
            state = _warm.get(key)
            if state is None:
                super().initialize_from_trained_model_folder(model_training_output_dir,
                                                             use_folds, checkpoint_name)
                _warm[key] = {k: getattr(self, k) for k in PREDICTOR_STATE}
                load_counts[folder] = load_counts.get(folder, 0) + 1
                return
            for k, v in state.items():
                setattr(self, k, v)

    ts_nnunet.nnUNetPredictor = WarmPredictor


@contextlib.contextmanager
def cpu_threads(n: int) -> Iterator[None]:
    """TotalSegmentator sets torch to every core of the machine on CPU; hold it to n."""
    torch = import_torch()
    original = multiprocessing.cpu_count
    multiprocessing.cpu_count = lambda: n  # read by TotalSegmentator right before predicting
    try:
        yield
    finally:
        multiprocessing.cpu_count = original
        torch.set_num_threads(n)


def ts_device(device: str) -> str:
    """rtnode device names → TotalSegmentator's (gpu, gpu:N, cpu, mps)."""
    if device.startswith("cuda"):
        return "gpu" + device[4:]
    return device


class TotalSegmentatorSegmenter:
    """One TotalSegmentator task (fast/fastest/full) on one device."""

    def __init__(self, task: str = "total", home: Path | None = None, device: str = "cpu",
                 fast: bool = False, fastest: bool = False,
                 roi_subset: Sequence[str] | None = None, force_split: bool = False,
                 threads: int = 1):
        self.task = task
        self.home = Path(home) if home is not None else default_home()
        self.device = device
        self.fast = fast
        self.fastest = fastest
        self.roi_subset = list(roi_subset) if roi_subset else None
        self.force_split = force_split
        self.threads = threads
        self.spec = f"totalsegmentator:{task}"
        self.names: dict[int, str] = {}
        self.loaded = False

    @property
    def weights_dir(self) -> Path:
        return Path(os.environ.get("TOTALSEG_WEIGHTS_PATH", self.home / "nnunet" / "results"))

    def _mode(self) -> str:
        return "fastest" if self.fastest else "fast" if self.fast else "default"

    def required_models(self) -> list[tuple[int, str]]:
        """(task id, weights folder name) of every model this configuration runs."""
        from totalsegmentator.map_tasks_config import TASK_ID_WEIGHTS_CONFIGS
        from totalsegmentator.python_api import get_task_config

        try:
            cfg = get_task_config(self.task, fast=self.fast, fastest=self.fastest, quiet=True)
        except ValueError as exc:
            raise SegmentationError(f"TotalSegmentator: {exc}") from None
        ids = cfg["task_id"] if isinstance(cfg["task_id"], list) else [cfg["task_id"]]
        if cfg.get("crop") is not None or self.roi_subset or cfg.get("cascade"):
            ids = [298, *ids]  # the coarse model TotalSegmentator crops with
        out = []
        for tid in ids:
            info = TASK_ID_WEIGHTS_CONFIGS.get(tid, {})
            folder = info.get("foldername", f"Dataset{tid}")
            if info.get("rel_path"):
                folder = str(Path(info["rel_path"]) / folder)
            out.append((tid, folder))
        return out

    def load(self) -> None:
        if self.loaded:
            return
        os.environ["TOTALSEG_HOME_DIR"] = str(self.home)
        statistics_off(self.home)
        try:
            from totalsegmentator.map_to_binary import class_map
        except ImportError as exc:
            raise SegmentationError(f"TotalSegmentator is not installed; {ML_EXTRA_HINT}") from exc
        if self.task not in class_map:
            raise SegmentationError(f"TotalSegmentator has no task {self.task!r}")
        missing = [f for _, f in self.required_models() if not (self.weights_dir / f).is_dir()]
        if missing:
            raise ModelWeightsMissing(
                f"no weights for task {self.task} ({self._mode()}) under {self.weights_dir} "
                f"(missing {', '.join(missing)}); {WEIGHTS_HELP}")
        unknown = sorted(set(self.roi_subset or ()) - set(class_map[self.task].values()))
        if unknown:
            raise SegmentationError(f"roi_subset names {unknown} are not ROIs of TotalSegmentator "
                                    f"task {self.task}")
        point_nnunet_at(self.weights_dir)
        guard_trainer_lookup()
        install_warm_predictor()
        names = dict(class_map[self.task])
        if self.roi_subset:
            names = {v: n for v, n in names.items() if n in self.roi_subset}
        self.names = {int(v): str(n) for v, n in names.items()}
        self.loaded = True

    def predict(self, image: sitk.Image, small_footprint: bool = False) -> SegmentationResult:
        self.load()
        from totalsegmentator.python_api import totalsegmentator

        point_nnunet_at(self.weights_dir)
        with tempfile.TemporaryDirectory(prefix="rtnode-totalseg-") as tmp:
            path = Path(tmp) / "ct.nii.gz"
            sitk.WriteImage(sitk.Cast(image, sitk.sitkInt16), str(path))
            with cpu_threads(self.threads):
                seg = totalsegmentator(
                    input=path, output=None, ml=True, task=self.task, fast=self.fast,
                    fastest=self.fastest, roi_subset=self.roi_subset,
                    force_split=self.force_split or small_footprint, device=ts_device(self.device),
                    nr_thr_resamp=self.threads, nr_thr_saving=1, quiet=True, skip_saving=True)
        labels = np.asarray(seg.dataobj).astype(np.uint16).transpose(2, 1, 0)
        shape = sitk.GetArrayViewFromImage(image).shape
        if labels.shape != shape:
            raise SegmentationError(f"TotalSegmentator returned labels shaped {labels.shape} "
                                    f"for a CT shaped {shape}")
        return SegmentationResult(labels=labels, names=dict(self.names), model=self.spec)
