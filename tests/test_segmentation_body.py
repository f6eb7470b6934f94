"""builtin:body on a phantom CT with a couch, and ``rtnode segment`` end to end with it."""

from __future__ import annotations

import math
import subprocess

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import typer
from typer.testing import CliRunner

from peers import require
from rtnode.phantom import CTGeometry, Cylinder, EllipticBody, Patient, Sphere
from rtnode.phantom.couch import Couch, with_couch
from rtnode.phantom.ct import make_ct_series, water_phantom_hu
from rtnode.phantom.masks import shape_masks, voxel_centres
from rtnode.rtstruct import CTGrid, read_rtstruct_masks
from rtnode.segmentation import (
    ModelSpecError,
    SegmentationConfig,
    get_segmenter,
    load_ct,
    parse_spec,
    segment,
)
from rtnode.segmentation.cli import segment_command

BODY = EllipticBody(semi_x=110.0, semi_y=80.0)
COUCH = Couch(top=92.0, thickness=24.0, half_width=150.0)
INSERTS = [  # a lung-like air cavity (must be filled) and a dense bone-like rod
    (Sphere("Lung", center=(-40.0, -10.0, 0.0), radius=25.0), -850.0),
    (Cylinder("Bone", center=(0.0, 50.0), radius=10.0, z0=-100.0, z1=100.0), 700.0),
]
GEOMETRIES = {
    "HFS": CTGeometry(rows=128, columns=128, pixel_spacing=(2.0, 2.0), slices=30,
                      slice_spacing=2.5),
    "FFS": CTGeometry(rows=128, columns=128, pixel_spacing=(2.0, 2.0), slices=30,
                      slice_spacing=-2.5, orientation=(-1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
                      patient_position="FFS"),
}


def phantom_ct(geometry: CTGeometry):
    hu = with_couch(water_phantom_hu(BODY, INSERTS), COUCH)
    return make_ct_series(Patient(patient_id="BODY01"), geometry, hu)


@pytest.mark.parametrize("position", list(GEOMETRIES))
def test_body_volume_and_couch_excluded(position):
    ct = phantom_ct(GEOMETRIES[position])
    image, datasets = load_ct(ct)
    result = segment(image, "builtin:body")
    body = result.masks()["BODY"]
    grid = CTGrid.from_datasets(datasets)
    x, y, z = voxel_centres(datasets)
    couch = COUCH.contains(x, y, z)
    assert couch.sum() > 1000  # the couch is really on the CT
    assert not (body & couch).any()
    scanned_length = grid.shape[0] * abs(GEOMETRIES[position].slice_spacing)
    analytic = math.pi * BODY.semi_x * BODY.semi_y * scanned_length
    measured = body.sum() * grid.voxel_volume_mm3
    assert abs(measured / analytic - 1.0) < 0.02, (measured, analytic)
    # the cavity is inside BODY (holes filled), and it is where the phantom put it
    lung = INSERTS[0][0].contains(x, y, z)
    assert body[lung].all()
    assert result.interpreted_types == {1: "EXTERNAL"}


def test_warm_cache_returns_the_same_segmenter():
    config = SegmentationConfig()
    assert get_segmenter("builtin:body", config) is get_segmenter("builtin:body", config)


@pytest.mark.parametrize("spec", ["body", "builtin:liver", "magic:model", "nnunet:"])
def test_bad_model_specs_are_clear(spec):
    with pytest.raises(ModelSpecError, match="model spec|only builtin"):
        parse_spec(spec)


def test_config_rejects_unknown_keys_and_devices():
    with pytest.raises(ValueError):
        SegmentationConfig(devices=["tpu"])
    with pytest.raises(ValueError):
        SegmentationConfig(default_modle="builtin:body")
    assert SegmentationConfig().timeout_seconds == 3600


@pytest.fixture
def cli():
    app = typer.Typer()
    app.command("segment")(segment_command)
    app.command("noop")(lambda: None)  # two commands, so "segment" is a subcommand
    return app


def test_segment_command_writes_masks_and_rtstruct(cli, tmp_path):
    ct = phantom_ct(GEOMETRIES["FFS"])
    ct_dir = tmp_path / "ct"
    ct_dir.mkdir()
    for i, ds in enumerate(ct):
        ds.save_as(ct_dir / f"CT{i:03d}.dcm", enforce_file_format=True)
    (tmp_path / "config.yaml").write_text("{}\n")
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["segment", str(ct_dir), "--model", "builtin:body", "--out",
                                 str(out), "--config", str(tmp_path / "config.yaml")])
    assert r.exit_code == 0, r.output
    assert "BODY" in r.output
    rs_path = out / "rtstruct_auto.dcm"
    rs = pydicom.dcmread(rs_path)
    assert rs.StructureSetROISequence[0].ROIName == "BODY"
    assert rs.StructureSetROISequence[0].ROIGenerationDescription == "builtin:body"
    assert rs.RTROIObservationsSequence[0].RTROIInterpretedType == "EXTERNAL"
    assert list(rs.ROIContourSequence[0].ROIDisplayColor) == [0, 255, 0]
    # the NIfTI mask sits on the CT grid and agrees with the RTSTRUCT
    nifti = sitk.ReadImage(str(out / "seg" / "BODY.nii.gz"))
    image, datasets = load_ct(ct_dir)
    assert np.allclose(nifti.GetOrigin(), image.GetOrigin())
    assert np.allclose(nifti.GetDirection(), image.GetDirection())
    mask = sitk.GetArrayFromImage(nifti).astype(bool)
    back = read_rtstruct_masks(rs, datasets)["BODY"]
    assert 2 * (mask & back).sum() / (mask.sum() + back.sum()) > 0.99
    truth = shape_masks(datasets, [BODY])["BODY"]
    assert 2 * (truth & back).sum() / (truth.sum() + back.sum()) > 0.98
    text = subprocess.run([require("dciodvfy"), str(rs_path)], capture_output=True,
                          text=True).stderr
    assert not [line for line in text.splitlines() if line.startswith("Error")], text


def test_segment_command_errors_are_readable(cli, tmp_path):
    (tmp_path / "config.yaml").write_text("{}\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    r = CliRunner().invoke(cli, ["segment", str(empty), "--out", str(tmp_path / "o"),
                                 "--config", str(tmp_path / "config.yaml")])
    assert r.exit_code == 2
    assert "no CT Image Storage files" in r.output
    r = CliRunner().invoke(cli, ["segment", str(empty), "--model", "magic", "--out",
                                 str(tmp_path / "o"), "--config", str(tmp_path / "config.yaml")])
    assert r.exit_code == 2
    assert "not a model spec" in r.output


class OutOfMemoryError(RuntimeError):
    """Named like torch.cuda.OutOfMemoryError, which the retry recognises by name."""


class LowMemoryBody:
    """builtin:body on a machine that has memory only for the small-footprint path."""

    spec = "builtin:body"

    def __init__(self, errors: list[BaseException]):
        from rtnode.segmentation.body import BodySegmenter

        self.inner = BodySegmenter()
        self.errors = list(errors)
        self.calls: list[bool] = []

    def load(self) -> None:
        pass

    def predict(self, image, small_footprint=False):
        self.calls.append(small_footprint)
        if self.errors:
            raise self.errors.pop(0)
        return self.inner.predict(image, small_footprint)


@pytest.mark.parametrize("error", [MemoryError(), OutOfMemoryError("CUDA"),
                                   RuntimeError("std::bad_alloc: cannot allocate memory")])
def test_memory_error_is_retried_with_a_smaller_footprint(error):
    image, _ = load_ct(phantom_ct(GEOMETRIES["HFS"]))
    seg = LowMemoryBody([error])
    result = segment(image, seg)
    assert seg.calls == [False, True]
    assert result.masks()["BODY"].any()


def test_two_memory_errors_fail_with_the_reason():
    from rtnode.segmentation import SegmentationError

    image, _ = load_ct(phantom_ct(GEOMETRIES["HFS"]))
    seg = LowMemoryBody([MemoryError("first"), MemoryError("second")])
    with pytest.raises(SegmentationError, match="ran out of memory twice"):
        segment(image, seg)
    seg = LowMemoryBody([ValueError("not a memory problem")])
    with pytest.raises(ValueError, match="not a memory problem"):
        segment(image, seg)
    assert seg.calls == [False]  # no retry for other errors


# --- the fast builtin:body is the reference algorithm, voxel for voxel -------------------------

def _body_cases():
    """HU volumes that exercise every step's edge: the couch and the patient running off the
    image edge (a patient wider than the field of view), holes that are open in 3-D but closed
    in-plane, diagonal-only gaps, noise specks, tissue in the first and last slices."""
    rng = np.random.default_rng(11)
    cases = {}
    for position, geometry in GEOMETRIES.items():
        image, _ = load_ct(phantom_ct(geometry))
        cases[position] = sitk.GetArrayFromImage(image)
    s, h, w = 20, 64, 72
    z, y, x = np.mgrid[0:s, 0:h, 0:w]
    wide = np.full((s, h, w), -1000.0)
    wide[((x - 36) / 40.0) ** 2 + ((y - 30) / 22.0) ** 2 <= 1] = 20.0   # cut by the side edges
    wide[(np.abs(x - 20) <= 6) & (np.abs(y - 30) <= 5)] = -900.0         # hole, open at z ends
    wide[(y >= 56) & (y <= 59)] = 300.0                                  # couch at the bottom edge
    wide[:, 10, 50] = -1000.0                                            # a 1-voxel airway
    wide[5, 28:31, 60] = -1000.0                                         # ...and a hole in one slice
    wide += rng.normal(0.0, 30.0, size=wide.shape)
    cases["wider than the field"] = wide
    speckle = np.where(rng.random((12, 40, 40)) < 0.55, 0.0, -1000.0)   # a noisy block: many
    cases["speckle"] = speckle                                           # components and holes
    diagonal = np.full((6, 30, 30), -1000.0)
    diagonal[:, 5:25, 5:25] = 0.0
    diagonal[:, 12:18, 12:18] = -1000.0
    diagonal[:, 14, 14] = 0.0
    diagonal[2, 11, 11] = -1000.0          # hole touching the cavity only diagonally
    cases["diagonal"] = diagonal
    return cases


@pytest.mark.parametrize("case", ["HFS", "FFS", "wider than the field", "speckle", "diagonal"])
def test_fast_body_mask_is_the_reference_algorithm_voxel_for_voxel(case):
    """The BODY volume is unchanged by the speed-up: not within a tolerance, but exactly the
    same voxels as the straightforward formulation (SimpleITK opening with the image edge as
    foreground, 3-D labelling, scipy hole filling on the whole grid)."""
    from body_reference import reference_body_mask
    from rtnode.segmentation.body import body_mask

    hu = _body_cases()[case].astype(np.float32)
    reference = reference_body_mask(sitk.GetImageFromArray(hu))
    fast = body_mask(hu)
    assert reference.any()
    assert np.array_equal(fast, reference), (case, int(fast.sum()), int(reference.sum()))


def test_body_of_air_is_a_clear_error():
    from rtnode.segmentation.base import SegmentationError
    from rtnode.segmentation.body import body_mask

    with pytest.raises(SegmentationError, match="HU"):
        body_mask(np.full((3, 10, 10), -1000.0, dtype=np.float32))
    specks = np.full((3, 10, 10), -1000.0, dtype=np.float32)
    specks[1, 5, 5] = 0.0  # tissue that a one-voxel opening removes entirely
    with pytest.raises(SegmentationError, match="HU"):
        body_mask(specks)


def test_largest_component_beyond_16_bit_labels():
    from rtnode.segmentation.body import largest_component

    m = np.zeros((2, 600, 640), dtype=bool)
    m[:, ::2, :600:2] = True  # 90 000 specks
    m[:, 5:9, 610:] = True
    big = largest_component(m)
    assert big.sum() == 2 * 4 * 30 and big[:, 5:9, 610:].all()
