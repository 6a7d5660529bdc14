"""Differentiable, per-sample random views of image batches (affine resampling): the synthesis' augmentations."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resample_affine(images: torch.Tensor, theta: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """Each image resampled through its own 2x3 affine ``theta`` (border padding), optionally at another side."""
    n, c, h, w = images.shape
    out = (n, c, size or h, size or w)
    grid = F.affine_grid(theta.to(images), list(out), align_corners=False)
    return F.grid_sample(images, grid, padding_mode="border", align_corners=False)


def random_resized_crop(
    images: torch.Tensor, scale: tuple[float, float], generator: torch.Generator | None = None
) -> torch.Tensor:
    """Per-sample crop covering a random ``scale`` fraction of the area, resized back to the full side.

    With scale near 1 it is a global view, with small scales a local view (the two views of CMI's contrastive term).
    """
    n = images.shape[0]
    side = torch.sqrt(scale[0] + torch.rand(n, generator=generator) * (scale[1] - scale[0]))
    centre = (torch.rand(n, 2, generator=generator) * 2 - 1) * (1 - side).unsqueeze(1)
    zero = torch.zeros(n)
    theta = torch.stack([torch.stack([side, zero, centre[:, 0]], 1), torch.stack([zero, side, centre[:, 1]], 1)], 1)
    return resample_affine(images, theta)
