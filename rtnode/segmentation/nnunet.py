"""nnunet:<model folder> — a custom nnU-Net v2 model (nnUNetPredictor), loaded once per process.

The model folder is nnU-Net's training output for one configuration
(``DatasetNNN_Name/nnUNetTrainer__nnUNetPlans__3d_fullres``): dataset.json, plans.json and
fold_N/<checkpoint>. Prediction runs in-process on a NumPy array (no temporary files, no worker
processes), so it also works inside a daemonic queue worker.
"""

from __future__ import annotations

import json
import logging
import sys
import types
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from rtnode.segmentation.base import ModelWeightsMissing, SegmentationError, SegmentationResult
from rtnode.segmentation.labels import LABEL_MAP_FILE, LabelMap, from_dataset_json, read_yaml_map
from rtnode.segmentation.orient import to_model_orientation

log = logging.getLogger(__name__)

ML_EXTRA_HINT = "install the ml extra: pip install 'rtnode[ml]' (see README)"
PRIMUS_MODULE = "nnunetv2.training.nnUNetTrainer.primus.primus_trainers"


def import_torch():
    try:
        import torch
    except ImportError as exc:
        raise SegmentationError(f"this model needs PyTorch, which is not installed; "
                                f"{ML_EXTRA_HINT}") from exc
    return torch


def torch_device(name: str):
    torch = import_torch()
    name = "cuda" + name[3:] if name.startswith("gpu") else name
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SegmentationError(f"device {name} asked for, but PyTorch sees no CUDA GPU")
    return torch.device(name)


def guard_trainer_lookup() -> None:
    """nnU-Net finds trainers by importing every trainer module; its primus module needs a
    torchvision matching torch, which CPU-only installs lack. Replace it by an empty module
    when it cannot be imported (TotalSegmentator's trainers do not need it)."""
    if PRIMUS_MODULE in sys.modules:
        return
    try:
        __import__(PRIMUS_MODULE)
    except Exception as exc:  # noqa: BLE001 - any failure there only hides primus trainers
        log.info("nnU-Net primus trainers unavailable (%s); skipped", exc)
        sys.modules[PRIMUS_MODULE] = types.ModuleType(PRIMUS_MODULE)


def available_folds(folder: Path, checkpoint: str) -> list[int | str]:
    folds: list[int | str] = []
    for sub in sorted(folder.glob("fold_*")):
        if (sub / checkpoint).is_file():
            suffix = sub.name[len("fold_"):]
            folds.append(int(suffix) if suffix.isdigit() else suffix)
    return folds


class NNUNetSegmenter:
    """One nnU-Net model folder on one device."""

    def __init__(self, model_folder: Path, device: str = "cpu",
                 folds: Sequence[int | str] | None = None,
                 checkpoint: str = "checkpoint_final.pth", threads: int = 1,
                 label_map: Path | None = None, tile_step_size: float = 0.5,
                 use_mirroring: bool = True):
        self.folder = Path(model_folder)
        self.device = device
        self.folds = list(folds) if folds is not None else None
        self.checkpoint = checkpoint
        self.threads = threads
        self.label_map_path = label_map
        self.tile_step_size = tile_step_size
        self.use_mirroring = use_mirroring
        self.spec = f"nnunet:{self.folder}"
        self.predictor = None
        self.labels: LabelMap | None = None
        self.load_count = 0

    def _check_folder(self) -> list[int | str]:
        if not self.folder.is_dir():
            raise ModelWeightsMissing(f"nnU-Net model folder {self.folder} does not exist")
        for name in ("dataset.json", "plans.json"):
            if not (self.folder / name).is_file():
                raise ModelWeightsMissing(f"{self.folder} has no {name}: give the folder "
                                          f"nnU-Net trained into (…/Trainer__Plans__config)")
        folds = self.folds if self.folds is not None else available_folds(self.folder,
                                                                          self.checkpoint)
        if not folds:
            raise ModelWeightsMissing(f"no fold_N/{self.checkpoint} under {self.folder}")
        missing = [f for f in folds if not (self.folder / f"fold_{f}" / self.checkpoint).is_file()]
        if missing:
            raise ModelWeightsMissing(f"no weights for fold(s) {missing} under {self.folder} "
                                      f"(checkpoint {self.checkpoint})")
        return folds

    def load(self) -> None:
        if self.predictor is not None:
            return
        folds = self._check_folder()
        torch = import_torch()
        try:
            from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
        except ImportError as exc:
            raise SegmentationError(f"nnU-Net v2 is not installed; {ML_EXTRA_HINT}") from exc
        guard_trainer_lookup()
        torch.set_num_threads(self.threads)
        device = torch_device(self.device)
        predictor = nnUNetPredictor(tile_step_size=self.tile_step_size, use_gaussian=True,
                                    use_mirroring=self.use_mirroring,
                                    perform_everything_on_device=device.type != "cpu",
                                    device=device, verbose=False, verbose_preprocessing=False,
                                    allow_tqdm=False)
        predictor.initialize_from_trained_model_folder(str(self.folder), use_folds=tuple(folds),
                                                       checkpoint_name=self.checkpoint)
        dataset = json.loads((self.folder / "dataset.json").read_text())
        labels = from_dataset_json(dataset.get("labels", {}))
        yaml_map = self.label_map_path or (self.folder / LABEL_MAP_FILE)
        if self.label_map_path is not None or yaml_map.is_file():
            labels = read_yaml_map(yaml_map, labels)
        self.labels = labels
        self.predictor = predictor
        self.load_count += 1
        log.info("nnU-Net model %s loaded on %s (folds %s)", self.folder, device, folds)

    def predict(self, image: sitk.Image, small_footprint: bool = False) -> SegmentationResult:
        self.load()
        torch = import_torch()
        torch.set_num_threads(self.threads)
        oriented, back = to_model_orientation(image)
        data = sitk.GetArrayFromImage(oriented).astype(np.float32)[None]
        props = {"spacing": list(oriented.GetSpacing())[::-1]}
        predictor = self.predictor
        keep = predictor.perform_everything_on_device
        if small_footprint:  # logits and resampling in host memory, not on the GPU
            predictor.perform_everything_on_device = False
        try:
            with torch.no_grad():
                seg = predictor.predict_single_npy_array(data, props, None, None, False)
        finally:
            predictor.perform_everything_on_device = keep
        labels = back(np.asarray(seg).astype(np.uint16))
        assert self.labels is not None
        return SegmentationResult(labels=labels, names=dict(self.labels.names), model=self.spec,
                                  colors=dict(self.labels.colors),
                                  interpreted_types=dict(self.labels.interpreted_types))
