"""Radiomics: pyradiomics per ROI on (image, mask), robustness to segmentation perturbations."""
