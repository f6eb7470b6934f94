"""Phantom data for the radiomics tests: analytic spheres on voxel grids, and DICOM courses."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from rtnode.phantom import CTGeometry, Cylinder, EllipticBody, Patient, PhantomCourse, Sphere


def sphere_image(radius: float, spacing: float = 1.0, hu: float = 40.0,
                 margin: int = 6) -> tuple[sitk.Image, np.ndarray]:
    """A uniform image and the voxel-centre mask of a sphere of ``radius`` mm at its centre."""
    n = int(2 * radius / spacing) + 2 * margin
    c = (n - 1) / 2
    z, y, x = (np.indices((n, n, n)) - c) * spacing
    mask = x * x + y * y + z * z <= radius * radius
    image = sitk.GetImageFromArray(np.full(mask.shape, hu, dtype=np.float32))
    image.SetSpacing((spacing, spacing, spacing))
    return image, mask


def radiomics_course(patient_id: str, slow_roi: bool = False) -> PhantomCourse:
    """Four small targets/organs (fast) and, when asked, one big cylinder whose texture
    features take far longer than the others (for timeout tests)."""
    shapes = []
    if slow_roi:  # first, so that its task starts first and the others run beside it
        shapes.append(Cylinder("Huge", center=(0.0, 0.0), radius=85.0, z0=-55.0, z1=55.0))
    shapes += [Sphere("GTV", center=(0.0, 0.0, 0.0), radius=10.0, interpreted_type="GTV"),
              Sphere("PTV", center=(0.0, 0.0, 0.0), radius=16.0, interpreted_type="PTV"),
              Sphere("Lung_L", center=(60.0, 10.0, 0.0), radius=12.0),
              Sphere("Lung_R", center=(-60.0, 10.0, 0.0), radius=12.0)]
    shapes.append(EllipticBody(semi_x=120.0, semi_y=90.0))
    return PhantomCourse(patient=Patient(patient_id=patient_id),
                         geometry=CTGeometry(rows=128, columns=128, pixel_spacing=(2.0, 2.0),
                                             slices=48, slice_spacing=2.5),
                         shapes=shapes).build()
