"""RT Structure Sets: label masks on a CT grid → RTSTRUCT (writer) and back (reader)."""

from rtnode.rtstruct.geometry import CTGeometryError, CTGrid
from rtnode.rtstruct.reader import ReadReport, RTStructError, read_rtstruct_masks, roi_names
from rtnode.rtstruct.writer import format_ds, save_rtstruct, write_rtstruct

__all__ = ["CTGeometryError", "CTGrid", "ReadReport", "RTStructError", "format_ds",
           "read_rtstruct_masks", "roi_names", "save_rtstruct", "write_rtstruct"]
