"""Compressed planning CTs end to end: PACS send JPEG Lossless, JPEG-LS, JPEG 2000 and RLE.

One phantom CT is written five times — uncompressed, and compressed by DCMTK (dcmcjpeg: JPEG
Lossless Process 14 SV1, dcmcjpls: JPEG-LS lossless, dcmcrle: RLE) and by pydicom with the
openjpeg encoder (JPEG 2000 lossless) — each as its own patient. storescu sends all five to a
running ``rtnode serve``; every file must be stored exactly as it was sent (same transfer syntax,
same data set bytes), and every course must be segmented (builtin:body), written as RTSTRUCT,
checked by QC (and read by the radiomics image reader), with the BODY of each compressed series voxel for voxel the BODY of
the uncompressed one.
"""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import (
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from peers import require, store_responses, storescu
from rtnode.phantom import CTGeometry, EllipticBody, Patient, Sphere, make_ct_series
from rtnode.phantom.couch import Couch, with_couch
from rtnode.phantom.ct import water_phantom_hu
from rtnode.radiomics.images import series_image
from test_courses import stage

pytestmark = pytest.mark.network

GEOMETRY = CTGeometry(rows=96, columns=96, pixel_spacing=(3.5, 3.5), slices=24,
                      slice_spacing=3.0)
BODY = EllipticBody(semi_x=120.0, semi_y=85.0)
LUNG = Sphere("Lung", center=(-40.0, -5.0, 0.0), radius=22.0)
COUCH = Couch(top=100.0, thickness=24.0, half_width=150.0)

#: storescu's option that proposes each compressed transfer syntax (one per association)
PROPOSE = {"jpeg": ["-xs"], "jpegls": ["-xt"], "j2k": ["-xv"], "rle": ["-xr"]}
#: name → (transfer syntax, how the file is made from the uncompressed one)
SYNTAXES = {
    "jpeg": (JPEGLosslessSV1, "dcmcjpeg"),
    "jpegls": (JPEGLSLossless, "dcmcjpls"),
    "j2k": (JPEG2000Lossless, "pydicom"),
    "rle": (RLELossless, "dcmcrle"),
}


def noisy_phantom_hu():
    """Water body with a lung and a couch, plus seeded noise: every series gets the same
    pixels, and the codecs get realistic content (not flat regions only)."""
    rng = np.random.default_rng(7)
    base = with_couch(water_phantom_hu(BODY, [(LUNG, -850.0)]), COUCH)

    def hu(x, y, z):
        return base(x, y, z) + rng.normal(0.0, 12.0, size=x.shape)

    return hu


def write_series(folder: Path, patient_id: str) -> list[Path]:
    datasets = make_ct_series(Patient(patient_id=patient_id, study_uid=generate_uid()),
                              GEOMETRY, noisy_phantom_hu())
    folder.mkdir(parents=True)
    paths = []
    for i, ds in enumerate(datasets):
        path = folder / f"CT{i:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def compress(paths: list[Path], folder: Path, syntax: str, tool: str) -> list[Path]:
    folder.mkdir(parents=True)
    out = []
    for path in paths:
        target = folder / path.name
        if tool == "pydicom":
            ds = pydicom.dcmread(path)
            ds.compress(syntax)  # pylibjpeg-openjpeg's encoder
            ds.save_as(target, enforce_file_format=True)
        else:
            r = subprocess.run([require(tool), str(path), str(target)], capture_output=True,
                               text=True)
            assert r.returncode == 0, r.stderr
        out.append(target)
    return out


def data_set_bytes(path: Path) -> bytes:
    """A Part 10 file's data set: everything after the File Meta Information group."""
    raw = path.read_bytes()
    assert raw[128:132] == b"DICM"
    tag, vr, length, group_length = struct.unpack("<I2sHI", raw[132:144])
    assert tag == 0x00000002 and vr == b"UL"  # (0002,0000) File Meta Information Group Length
    return raw[144 + group_length:]


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> dict[str, list[Path]]:
    root = tmp_path_factory.mktemp("compressed")
    native = write_series(root / "native", "CMPNATIVE")
    out = {"native": native}
    for name, (syntax, tool) in SYNTAXES.items():
        # the same pixels, as another patient, so that each series is its own course
        plain = write_series(root / f"{name}-plain", f"CMP{name.upper()}")
        out[name] = compress(plain, root / name, syntax, tool)
    return out


def test_each_series_is_in_its_transfer_syntax_and_lossless(series):
    reference = [pydicom.dcmread(p).pixel_array for p in series["native"]]
    for name, (syntax, _tool) in SYNTAXES.items():
        for path, ref in zip(series[name], reference):
            ds = pydicom.dcmread(path)
            assert ds.file_meta.TransferSyntaxUID == syntax, (name, path)
            assert np.array_equal(ds.pixel_array, ref), (name, path)


def test_compressed_cts_are_stored_as_sent_and_segmented_like_the_uncompressed(
        series, node_factory, tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(
        "rules:\n  - {name: compressed, stages: [segment, rtstruct, qc],"
        " models: ['builtin:body']}\n")
    node = node_factory(courses={"rules_dir": str(rules)})
    for name, paths in series.items():
        # one association per series, proposing its transfer syntax, as a PACS sends it
        r = storescu(node.port, paths, extra=PROPOSE.get(name, []))
        assert store_responses(r.stdout) == ["Success"] * len(paths), (name, r.stdout[-2000:])
        conversions = {line.rsplit(": ", 1)[1] for line in r.stdout.splitlines()
                       if "Converting transfer syntax" in line}
        assert all(a == b for a, b in (c.split(" -> ") for c in conversions)), (name, conversions)

    # stored byte for byte as sent: same transfer syntax, same data set
    for name, paths in series.items():
        for path in paths:
            sent = pydicom.dcmread(path, stop_before_pixels=True)
            stored = (node.storage / "dicom" / sent.StudyInstanceUID / sent.SeriesInstanceUID
                      / f"{sent.SOPInstanceUID}.dcm")
            kept = pydicom.dcmread(stored, stop_before_pixels=True)
            assert kept.file_meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID, name
            assert data_set_bytes(stored) == data_set_bytes(path), (name, path)

    courses = node.wait_courses(
        lambda cs: len(cs) == len(series) and all(c["state"] in ("done", "failed")
                                                  for c in cs),
        timeout=600, what="five compressed/uncompressed courses done")
    by_patient = {c["patient_id"]: c for c in courses}
    bodies, checks = {}, {}
    for name in series:
        c = by_patient[f"CMP{name.upper()}"]
        for s in ("segment", "rtstruct", "qc"):
            assert stage(c, s)["state"] == "done", (name, s, stage(c, s), node.log[-3000:])
        out = Path(c["output_dir"])
        labels = sitk.ReadImage(str(out / "seg" / "builtin_body" / "labels.nii.gz"))
        bodies[name] = sitk.GetArrayFromImage(labels) == 1
        rs = pydicom.dcmread(out / "rtstruct_auto.dcm")
        assert [r.ROIName for r in rs.StructureSetROISequence] == ["BODY"]
        qc = json.loads((out / "qc.json").read_text())
        checks[name] = {c["id"]: c["status"] for c in qc["checks"]}

    native = bodies["native"]
    voxel = GEOMETRY.pixel_spacing[0] * GEOMETRY.pixel_spacing[1] * GEOMETRY.slice_spacing
    analytic = math.pi * BODY.semi_x * BODY.semi_y * GEOMETRY.slices * GEOMETRY.slice_spacing
    assert native.sum() * voxel == pytest.approx(analytic, rel=0.03)
    for name in SYNTAXES:
        assert np.array_equal(bodies[name], native), (name, bodies[name].sum(), native.sum())
        # QC read the same HU image and judged it the same way
        assert checks[name] == checks["native"], (name, checks[name])


def test_radiomics_reads_every_compressed_series_as_the_same_hu_image(series):
    """The image reader of radiomics and QC (rtnode.radiomics.images) decodes each transfer
    syntax to exactly the HU of the uncompressed series."""
    native = sitk.GetArrayFromImage(series_image([pydicom.dcmread(p)
                                                  for p in series["native"]]))
    assert native.min() < -900 and native.max() > -100
    for name in SYNTAXES:
        image = series_image([pydicom.dcmread(p) for p in series[name]])
        assert np.array_equal(sitk.GetArrayFromImage(image), native), name


def test_a_missing_decoder_names_the_transfer_syntax(series, tmp_path):
    """With the JPEG decoders made unimportable, reading the JPEG Lossless CT fails with a
    message naming the transfer syntax and what to install (not a traceback from pydicom)."""
    script = textwrap.dedent(f"""
        import sys
        for name in ("gdcm", "pylibjpeg", "libjpeg", "openjpeg", "rle"):
            sys.modules[name] = None   # import of these now raises ImportError
        from rtnode.dicom.pixels import PixelDataError
        from rtnode.segmentation.ct import load_ct
        try:
            load_ct({str(series["jpeg"][0].parent)!r})
        except PixelDataError as exc:
            print("ERROR", exc)
        else:
            print("DECODED")
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ERROR"), r.stdout
    assert "1.2.840.10008.1.2.4.70" in r.stdout and "JPEG Lossless" in r.stdout
    assert "pylibjpeg-libjpeg" in r.stdout
