"""nnunet:<folder> — real nnUNetPredictor inference on CPU from a tiny model the test builds."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

pytest.importorskip("torch")
pytest.importorskip("nnunetv2")

from seg_models import build_nnunet_model  # noqa: E402

from rtnode.phantom import CTGeometry, EllipticBody, Patient  # noqa: E402
from rtnode.phantom.ct import make_ct_series, water_phantom_hu  # noqa: E402
from rtnode.rtstruct import read_rtstruct_masks  # noqa: E402
from rtnode.segmentation import (  # noqa: E402
    ModelWeightsMissing,
    SegmentationConfig,
    clear_cache,
    get_segmenter,
    load_ct,
    segment,
)
from rtnode.segmentation.pipeline import segment_series  # noqa: E402

LABELS = {"background": 0, "liver": 1, "spleen": 2}


def small_ct(feet_first: bool = False):
    geometry = CTGeometry(rows=40, columns=48, pixel_spacing=(2.0, 2.0), slices=12,
                          slice_spacing=-2.5 if feet_first else 2.5,
                          orientation=(-1.0, 0, 0, 0, 1.0, 0) if feet_first else
                          (1.0, 0, 0, 0, 1.0, 0), patient_position="FFS" if feet_first else "HFS")
    body = EllipticBody(semi_x=40.0, semi_y=30.0)
    return make_ct_series(Patient(patient_id="NNU01"), geometry, water_phantom_hu(body))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("nnunet")
    return {"random": build_nnunet_model(root / "random", LABELS, folds=(0, 1)),
            "spleen": build_nnunet_model(root / "spleen", LABELS, winner=2)}


@pytest.fixture(autouse=True)
def fresh_cache():
    clear_cache()
    yield
    clear_cache()


def test_real_prediction_on_the_ct_grid_with_two_folds(models):
    image, datasets = load_ct(small_ct())
    config = SegmentationConfig(threads=1)
    result = segment(image, f"nnunet:{models['random']}", config)
    assert result.labels.shape == (12, 40, 48)
    assert set(np.unique(result.labels)) <= {0, 1, 2}
    assert result.names == {1: "liver", 2: "spleen"}
    assert result.model == f"nnunet:{models['random']}"


@pytest.mark.parametrize("feet_first", [False, True])
def test_label_values_map_to_dataset_json_names(models, feet_first):
    """The 'spleen' model predicts label 2 everywhere: the mask named spleen is all of the CT."""
    image, datasets = load_ct(small_ct(feet_first))
    result = segment(image, f"nnunet:{models['spleen']}")
    masks = result.masks()
    assert masks["spleen"].all() and not masks["liver"].any()


def test_model_is_loaded_once_and_kept_warm(models):
    config = SegmentationConfig()
    spec = f"nnunet:{models['random']}"
    image, _ = load_ct(small_ct())
    first = segment(image, spec, config)
    segmenter = get_segmenter(spec, config)
    predictor = segmenter.predictor
    second = segment(image, spec, config)
    assert get_segmenter(spec, config) is segmenter
    assert segmenter.predictor is predictor and segmenter.load_count == 1
    assert np.array_equal(first.labels, second.labels)  # same weights, same answer


def test_yaml_label_map_renames_and_colours(models, tmp_path):
    folder = build_nnunet_model(tmp_path / "mapped", LABELS, winner=1)
    (folder / "rtnode_labels.yaml").write_text(
        "1: {name: Liver, color: [150, 75, 0], type: ORGAN}\n2: Spleen\n")
    ct = small_ct()
    out = segment_series(ct, tmp_path / "out", spec=f"nnunet:{folder}")
    rs = pydicom.dcmread(out.rtstruct)
    names = {r.ROINumber: str(r.ROIName) for r in rs.StructureSetROISequence}
    assert sorted(names.values()) == ["Liver", "Spleen"]
    colours = {names[c.ReferencedROINumber]: list(c.ROIDisplayColor)
               for c in rs.ROIContourSequence}
    assert colours["Liver"] == [150, 75, 0]
    back = read_rtstruct_masks(rs, ct)
    assert back["Liver"].mean() > 0.95 and not back["Spleen"].any()


def test_missing_weights_are_a_clear_error(models, tmp_path):
    folder = build_nnunet_model(tmp_path / "nofold", LABELS)
    (folder / "fold_0" / "checkpoint_final.pth").unlink()
    with pytest.raises(ModelWeightsMissing, match="no fold_N/checkpoint_final.pth"):
        get_segmenter(f"nnunet:{folder}")
    with pytest.raises(ModelWeightsMissing, match="does not exist"):
        get_segmenter(f"nnunet:{tmp_path / 'nowhere'}")
