#!/usr/bin/env python3
"""builtin:body + RTSTRUCT on a 300-slice 512² CT, split by step, against plastimatch's body
segmentation measured in the same run.

    python scripts/bench/body.py [--slices 300] [--size 512] [--before /path/to/older/checkout]

The CT is a thorax-like phantom (elliptic body, two lungs, an airway open at both ends, a spine,
a couch of two dense plates around foam, seeded noise), written as DICOM files. Printed:
  * in this process, each step of the current code (CT read + decode, the mask steps, NIfTI,
    RTSTRUCT build and save) next to the mask steps of the straightforward formulation
    (tests/body_reference.py, the algorithm before it was made fast), with a check that both
    masks are voxel for voxel the same;
  * whole commands from a cold start, each in its own process with its peak memory:
    ``rtnode segment`` (this checkout, and --before's when given) and
    ``plastimatch segment --input CT --output-img ...``, with the Dice of plastimatch's mask
    against rtnode's BODY (they are different algorithms: plastimatch also removes the couch
    by its own rules).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402

from rtnode.phantom import CTGeometry, EllipticBody, Patient, make_ct_series  # noqa: E402
from rtnode.phantom.couch import Couch, with_couch  # noqa: E402


def thorax_hu(seed: int = 0):
    body = EllipticBody(semi_x=175.0, semi_y=115.0)
    rng = np.random.default_rng(seed)

    def hu(x, y, z):
        out = np.full(x.shape, -1000.0)
        out[body.contains(x, y, z)] = 30.0
        for cx in (-80.0, 80.0):  # lungs, rounded at both ends
            out[((x - cx) / 60) ** 2 + ((y + 5) / 75) ** 2 + (z / 160) ** 2 <= 1] = -850.0
        out[x ** 2 + (y + 60) ** 2 <= 9 ** 2] = -1000.0  # airway, open through the scan
        out[x ** 2 + (y - 75) ** 2 <= 18 ** 2] = 700.0  # spine
        out += rng.normal(0.0, 15.0, size=out.shape)
        return out

    return with_couch(hu, Couch(top=125.0, thickness=30.0, half_width=230.0))


def write_ct(folder: Path, slices: int, size: int) -> None:
    geometry = CTGeometry(rows=size, columns=size, pixel_spacing=(500 / size, 500 / size),
                          slices=slices, slice_spacing=1.0)
    folder.mkdir(parents=True)
    for i, ds in enumerate(make_ct_series(Patient(patient_id="BODYBENCH"), geometry,
                                          thorax_hu())):
        ds.save_as(folder / f"CT{i:04d}.dcm", enforce_file_format=True)


class Steps:
    """Wall time per named step, in call order."""

    def __init__(self):
        self.times: dict[str, float] = {}
        self._last = time.perf_counter()

    def restart(self) -> None:
        self._last = time.perf_counter()

    def __call__(self, step: str) -> None:
        now = time.perf_counter()
        self.times[step] = self.times.get(step, 0.0) + now - self._last
        self._last = now


#: runs a command and prints its peak RSS: a small process in between, because a child forked
#: straight from this (large) one would inherit its high-water mark
PEAK_WRAPPER = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
                "print('PEAK_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
                "file=sys.stderr); sys.exit(r.returncode)")


def run_child(cmd: list[str], cwd: Path,
              env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in GB, output) of one command in its own process, started in
    cwd (not this checkout, so that ``-m rtnode`` imports what PYTHONPATH names)."""
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", PEAK_WRAPPER, *cmd], cwd=cwd, env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = time.perf_counter() - start
    if r.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed ({r.returncode}):\n{r.stdout[-2000:]}")
    peak_kb = next(int(line.split()[1]) for line in reversed(r.stdout.splitlines())
                   if line.startswith("PEAK_KB"))
    return seconds, peak_kb / 1024 ** 2, r.stdout


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--before", type=Path, default=None,
                    help="another rtnode checkout whose `rtnode segment` is timed as 'before'")
    args = ap.parse_args()

    from body_reference import reference_body_mask
    from rtnode.rtstruct.contours import remove_small_islands
    from rtnode.rtstruct.writer import _slice_contours, save_rtstruct
    from rtnode.rtstruct.geometry import CTGrid
    from rtnode.segmentation.body import body_mask
    from rtnode.segmentation.config import SegmentationConfig
    from rtnode.segmentation.ct import load_ct
    from rtnode.segmentation.pipeline import rtstruct_from_segmentations, save_segmentation
    from rtnode.segmentation.base import SegmentationResult

    with tempfile.TemporaryDirectory(prefix="rtnode-bodybench-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        write_ct(tmp / "ct", args.slices, args.size)
        print(f"{args.slices} CT slices {args.size}x{args.size} (thorax phantom with couch) "
              f"written in {time.perf_counter() - t0:.1f} s; cores {os.cpu_count()}, "
              f"load average {os.getloadavg()[0]:.1f}")

        # ---- in this process: each step ----
        now = Steps()
        image, datasets = load_ct(tmp / "ct")
        now("CT read + decode")
        hu = sitk.GetArrayViewFromImage(image)
        now.restart()
        mask = body_mask(hu, timer=now)
        result = SegmentationResult(labels=mask.view(np.uint8), names={1: "BODY"},
                                    model="builtin:body", interpreted_types={1: "EXTERNAL"})
        now.restart()
        outputs = save_segmentation(result, image, "builtin:body", tmp / "out" / "seg")
        now("NIfTI (labels + BODY)")
        rs = rtstruct_from_segmentations([outputs.label_map], datasets, SegmentationConfig())
        now("RTSTRUCT build")
        save_rtstruct(rs, tmp / "out" / "rtstruct_auto.dcm")
        now("RTSTRUCT save")
        # parts of the RTSTRUCT build, timed again on their own
        part = Steps()
        clean = remove_small_islands(mask, SegmentationConfig().min_island_voxels)
        part("  of which: island removal")
        _slice_contours(CTGrid.from_datasets(datasets), clean)
        part("  of which: contours")

        before = Steps()
        reference = reference_body_mask(image, timer=before)
        same = np.array_equal(reference, mask)
        del reference, image, hu

        # ---- whole commands, each in its own process ----
        (tmp / "config.yaml").write_text("{}\n")
        py = sys.executable
        cmd = [py, "-m", "rtnode", "segment", str(tmp / "ct"), "--model", "builtin:body",
               "--out", str(tmp / "cli"), "--config", str(tmp / "config.yaml")]
        runs = {"rtnode segment (builtin:body + RTSTRUCT)":
                run_child(cmd, tmp, {**os.environ, "PYTHONPATH": str(ROOT)})}
        if args.before:
            cmd_before = [*cmd[:-3], str(tmp / "cli-before"), *cmd[-2:]]
            runs["rtnode segment, --before checkout"] = run_child(
                cmd_before, tmp, {**os.environ, "PYTHONPATH": str(args.before.resolve())})
        runs["plastimatch segment (body mask)"] = run_child(
            ["plastimatch", "segment", "--input", str(tmp / "ct"), "--output-img",
             str(tmp / "plastimatch_body.nrrd")], tmp)
        pm = sitk.ReadImage(str(tmp / "plastimatch_body.nrrd"))
        ours = sitk.ReadImage(str(tmp / "cli" / "seg" / "BODY.nii.gz"))
        pm = sitk.Resample(pm, ours, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        pm_dice = dice(sitk.GetArrayViewFromImage(pm) > 0,
                       sitk.GetArrayViewFromImage(ours) > 0)

    print("\nin one process (s)                    before     now")
    for step, seconds in now.times.items():
        old = f"{before.times[step]:>8.2f}" if step in before.times else " " * 8
        print(f"  {step:<34}{old}{seconds:>8.2f}")
    for step, seconds in part.times.items():
        print(f"  {step:<34}{'':>8}{seconds:>8.2f}")
    mask_now = sum(v for k, v in now.times.items() if k in before.times)
    print(f"  {'mask steps':<34}{sum(before.times.values()):>8.2f}{mask_now:>8.2f}"
          f"   ({sum(before.times.values()) / mask_now:.1f}x)")
    print(f"  BODY voxels {int(mask.sum())}; same voxels as the reference algorithm: {same}")
    print("\nwhole command, cold process              wall s   peak GB")
    for name, (seconds, peak, _out) in runs.items():
        print(f"  {name:<40}{seconds:>7.2f}{peak:>9.2f}")
    ours_s = runs["rtnode segment (builtin:body + RTSTRUCT)"][0]
    pm_s = runs["plastimatch segment (body mask)"][0]
    print(f"rtnode / plastimatch wall time: {ours_s / pm_s:.2f} "
          f"(rtnode also writes the RTSTRUCT); Dice(plastimatch, rtnode BODY) = {pm_dice:.4f}")
    print(f"this process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2:.2f}"
          f" GB (holds both algorithms' arrays)")
    if not same:
        sys.exit("the fast BODY differs from the reference algorithm")


if __name__ == "__main__":
    main()
