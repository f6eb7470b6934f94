"""Pixel Data as numbers, in whatever transfer syntax the image arrived.

PACS send CT compressed (JPEG Lossless, JPEG-LS, JPEG 2000, RLE) and storage keeps every file
byte for byte as received, so each reader of pixels decodes at its own end, through pydicom's
pixel decoders and the plugins installed with rtnode (pylibjpeg with its libjpeg and openjpeg
plugins, and pylibjpeg-rle; python-gdcm also serves where present). A transfer syntax without
an installed decoder is an error that names it and says what to install, never an opaque
traceback from deep inside pydicom.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder
from pydicom.uid import UID

#: what the core install brings for compressed transfer syntaxes (pyproject dependencies)
DECODER_PACKAGES = "pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg pylibjpeg-rle"


class PixelDataError(ValueError):
    """An image's Pixel Data cannot be decoded; the message names instance and transfer syntax."""


def transfer_syntax(ds: Dataset) -> UID | None:
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    return UID(str(uid)) if uid else None


def _describe(uid: UID) -> str:
    return f"{uid.name} ({uid})" if uid.name and uid.name != str(uid) else str(uid)


def check_decodable(ds: Dataset) -> None:
    """Raise PixelDataError unless an installed decoder handles the image's transfer syntax."""
    uid = transfer_syntax(ds)
    if uid is None or not uid.is_compressed:
        return
    sop = getattr(ds, "SOPInstanceUID", "?")
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        raise PixelDataError(f"image {sop}: no decoder exists for transfer syntax "
                             f"{_describe(uid)}; ask the sender for an uncompressed or "
                             f"lossless JPEG/JPEG-LS/JPEG 2000/RLE transfer syntax") from None
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "no plugin"
        raise PixelDataError(f"image {sop}: no installed decoder for transfer syntax "
                             f"{_describe(uid)} ({missing}); install the decoders rtnode "
                             f"depends on: pip install {DECODER_PACKAGES}")


def pixel_array(ds: Dataset) -> np.ndarray:
    """The stored pixel values of a single-frame image (before rescale), decoded if compressed.

    Unlike ``ds.pixel_array`` this keeps no decoded copy on the dataset, so a series of
    datasets held for their headers does not hold its pixels twice."""
    check_decodable(ds)
    uid = transfer_syntax(ds)
    sop = getattr(ds, "SOPInstanceUID", "?")
    try:
        if uid is None:  # a dataset built in memory without file meta: pydicom decides
            return ds.pixel_array
        array, _ = get_decoder(uid).as_array(ds)
        return array
    except PixelDataError:
        raise
    except Exception as exc:  # a corrupt or truncated stream: say which image and syntax
        name = _describe(uid) if uid is not None else "unknown transfer syntax"
        raise PixelDataError(f"image {sop}: Pixel Data in {name} cannot be decoded: "
                             f"{exc}") from exc


def modality_values(ds: Dataset, dtype=np.float32) -> np.ndarray:
    """Pixel values in modality units (HU for CT): RescaleSlope and RescaleIntercept applied."""
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    values = pixel_array(ds).astype(dtype)
    if slope != 1:
        values *= dtype(slope)
    if intercept != 0:
        values += dtype(intercept)
    return values
