"""totalsegmentator:<task> — TotalSegmentator's own pipeline, offline, on a planted tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("nnunetv2")
pytest.importorskip("totalsegmentator")

from seg_models import plant_totalsegmentator_model  # noqa: E402

from rtnode.phantom import CTGeometry, EllipticBody, Patient  # noqa: E402
from rtnode.phantom.ct import make_ct_series, water_phantom_hu  # noqa: E402
from rtnode.segmentation import (  # noqa: E402
    ModelWeightsMissing,
    SegmentationConfig,
    clear_cache,
    get_segmenter,
    load_ct,
    segment,
)
from rtnode.segmentation import totalseg  # noqa: E402

LIVER = 5  # TotalSegmentator "total": label 5 is liver


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("totalseg_home")
    plant_totalsegmentator_model(home, "total", fast=True, winner=LIVER)
    return home


@pytest.fixture(scope="module")
def ct():
    geometry = CTGeometry(rows=40, columns=48, pixel_spacing=(2.0, 2.0), slices=14,
                          slice_spacing=2.5)
    return make_ct_series(Patient(patient_id="TS01"), geometry,
                          water_phantom_hu(EllipticBody(semi_x=40.0, semi_y=30.0)))


@pytest.fixture(autouse=True)
def fresh_cache():
    clear_cache()
    yield
    clear_cache()


def test_pipeline_runs_offline_maps_labels_and_stays_warm(home, ct, monkeypatch):
    monkeypatch.delenv("TOTALSEG_WEIGHTS_PATH", raising=False)
    config = SegmentationConfig(totalseg_home=home, fast=True, threads=1)
    image, datasets = load_ct(ct)
    first = segment(image, "totalsegmentator:total", config)
    assert first.labels.shape == (14, 40, 48)
    assert first.names[LIVER] == "liver" and len(first.names) == 117
    masks = first.masks(include_empty=False)
    assert list(masks) == ["liver"] and masks["liver"].all()
    # usage statistics are off in the home we gave it
    assert json.loads((home / "config.json").read_text())["send_usage_stats"] is False
    # a second course: same segmenter, the checkpoint is not read again
    segmenter = get_segmenter("totalsegmentator:total", config)
    loads = dict(totalseg.load_counts)
    second = segment(image, "totalsegmentator:total", config)
    assert get_segmenter("totalsegmentator:total", config) is segmenter
    assert totalseg.load_counts == loads and sum(loads.values()) == 1
    assert np.array_equal(first.labels, second.labels)


def test_missing_weights_name_the_task_and_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("TOTALSEG_WEIGHTS_PATH", raising=False)
    config = SegmentationConfig(totalseg_home=tmp_path / "empty", fast=False)
    with pytest.raises(ModelWeightsMissing) as err:
        get_segmenter("totalsegmentator:total", config)
    text = str(err.value)
    assert "no weights for task total" in text and str(tmp_path / "empty") in text
    assert "installing model weights offline" in text
    assert "Dataset291" in text


def test_force_split_retry_after_a_memory_error(home, monkeypatch):
    """The first prediction runs out of memory; segment() retries with force_split on."""
    monkeypatch.delenv("TOTALSEG_WEIGHTS_PATH", raising=False)
    config = SegmentationConfig(totalseg_home=home, fast=True)
    segmenter = get_segmenter("totalsegmentator:total", config)
    import totalsegmentator.python_api as api

    calls: list[bool] = []
    real = api.totalsegmentator

    def once_out_of_memory(*args, **kwargs):
        calls.append(kwargs["force_split"])
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "totalsegmentator", once_out_of_memory)
    # force_split cuts the volume in three along z with 20-voxel margins: a long CT
    long_ct = make_ct_series(Patient(patient_id="TS02"),
                             CTGeometry(rows=24, columns=28, pixel_spacing=(4.0, 4.0),
                                        slices=90, slice_spacing=2.5),
                             water_phantom_hu(EllipticBody(semi_x=40.0, semi_y=30.0)))
    image, _ = load_ct(long_ct)
    result = segment(image, "totalsegmentator:total", config)
    assert calls == [False, True]
    assert result.masks()["liver"].any()
    assert segmenter.spec == "totalsegmentator:total"
