"""Tiny, randomly initialised model folders for tests: the real nnU-Net and TotalSegmentator
code paths run on them offline in seconds (segmentation quality is not the point).

``build_nnunet_model`` writes a complete nnU-Net v2 training-output folder (dataset.json,
plans.json, fold_N/checkpoint_final.pth) for a 3-stage PlainConvUNet of ~10k parameters.
``plant_totalsegmentator_model`` puts one under the dataset/trainer name TotalSegmentator looks
for in its weights folder, so its own pipeline finds "installed" weights and downloads nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

ARCH = {
    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "arch_kwargs": {
        "n_stages": 3,
        "features_per_stage": [4, 8, 16],
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[3, 3, 3], [3, 3, 3], [3, 3, 3]],
        "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
        "n_conv_per_stage": [1, 1, 1],
        "n_conv_per_stage_decoder": [1, 1],
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    },
    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
}


def _resampling(is_seg: bool) -> dict:
    return {"is_seg": is_seg, "order": 1 if is_seg else 3, "order_z": 0,
            "force_separate_z": None}


def plans_json(dataset_name: str, spacing: Sequence[float], patch_size: Sequence[int]) -> dict:
    return {
        "dataset_name": dataset_name,
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": list(spacing),
        "original_median_shape_after_transp": [64, 64, 64],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {"max": 1500.0, "mean": 50.0, "median": 40.0, "min": -1000.0,
                  "percentile_00_5": -900.0, "percentile_99_5": 1200.0, "std": 200.0}},
        "configurations": {
            "3d_fullres": {
                "data_identifier": "nnUNetPlans_3d_fullres",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 2,
                "patch_size": list(patch_size),
                "median_image_size_in_voxels": [64, 64, 64],
                "spacing": list(spacing),
                "normalization_schemes": ["CTNormalization"],
                "use_mask_for_norm": [False],
                "resampling_fn_data": "resample_data_or_seg_to_shape",
                "resampling_fn_seg": "resample_data_or_seg_to_shape",
                "resampling_fn_data_kwargs": _resampling(False),
                "resampling_fn_seg_kwargs": _resampling(True),
                "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                "resampling_fn_probabilities_kwargs": _resampling(False),
                "architecture": ARCH,
                "batch_dice": False,
            }
        },
    }


def build_nnunet_model(folder: Path, labels: dict[str, int], *, folds: Sequence[int] = (0,),
                       trainer: str = "nnUNetTrainer", spacing: Sequence[float] = (2.5, 2.0, 2.0),
                       patch_size: Sequence[int] = (16, 32, 32), winner: int | None = None,
                       seed: int = 0, dataset_name: str = "Dataset901_Tiny") -> Path:
    """Write the model folder; returns it. ``labels`` is dataset.json's name → value (with
    "background": 0). With ``winner``, the last 1x1x1 layer is set so that every voxel is
    predicted as that label — a known answer for testing label mapping end to end."""
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": labels, "numTraining": 1,
        "file_ending": ".nii.gz"}, indent=2))
    (folder / "plans.json").write_text(json.dumps(plans_json(dataset_name, spacing, patch_size),
                                                  indent=2))
    n_out = max(labels.values()) + 1
    for fold in folds:
        torch.manual_seed(seed + fold)
        net = get_network_from_plans(ARCH["network_class_name"], ARCH["arch_kwargs"],
                                     ARCH["_kw_requires_import"], 1, n_out, allow_init=True,
                                     deep_supervision=False)
        if winner is not None:
            seg_layer = net.decoder.seg_layers[-1]
            with torch.no_grad():
                seg_layer.weight.zero_()
                seg_layer.bias.zero_()
                seg_layer.bias[winner] = 10.0
        (folder / f"fold_{fold}").mkdir(exist_ok=True)
        torch.save({"network_weights": net.state_dict(), "trainer_name": trainer,
                    "init_args": {"configuration": "3d_fullres"},
                    "inference_allowed_mirroring_axes": (0, 1, 2)},
                   folder / f"fold_{fold}" / "checkpoint_final.pth")
    return folder


def plant_totalsegmentator_model(home: Path, task: str = "total", fast: bool = True,
                                 winner: int | None = None) -> Path:
    """A tiny model where TotalSegmentator looks for ``task`` (fast or default sub-mode) under
    ``home``/nnunet/results, with the task's real label count; returns the model folder."""
    from totalsegmentator.map_tasks_config import TASK_CONFIGS, TASK_ID_WEIGHTS_CONFIGS
    from totalsegmentator.map_to_binary import class_map

    cfg = TASK_CONFIGS[task]
    if "sub_modes" in cfg:
        cfg = cfg["sub_modes"]["fast" if fast else "default"]
    task_id = cfg["task_id"]
    if isinstance(task_id, list):
        raise ValueError(f"task {task} needs several models; plant a single-model task")
    trainer = cfg.get("trainer", "nnUNetTrainer")
    labels = {"background": 0, **{name: value for value, name in class_map[task].items()}}
    dataset = TASK_ID_WEIGHTS_CONFIGS[task_id]["foldername"]  # the name it would download
    folder = Path(home) / "nnunet" / "results" / dataset / f"{trainer}__nnUNetPlans__3d_fullres"
    spacing = [float(cfg.get("resample", 3.0))] * 3
    build_nnunet_model(folder, labels, trainer=trainer, spacing=spacing,
                       patch_size=(16, 16, 16), winner=winner, dataset_name=dataset)
    return folder
