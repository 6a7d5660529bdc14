"""Augmentations of the zoo's training: glyph images shifted, rotated and zoomed, and placed on flat canvases."""

from __future__ import annotations

import math

import torch

from ..augment import resample_affine


def random_affine(
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    shift: float = 0.1,
    degrees: float = 10.0,
    scale: tuple[float, float] = (0.9, 1.1),
) -> torch.Tensor:
    """Per-sample random shift (fraction of the side), rotation and zoom: training augmentation for glyph images."""
    n = images.shape[0]
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(degrees)
    factor = scale[0] + torch.rand(n, generator=generator) * (scale[1] - scale[0])
    offset = (torch.rand(n, 2, generator=generator) * 2 - 1) * shift * 2
    cos, sin = torch.cos(angle) / factor, torch.sin(angle) / factor
    theta = torch.stack([torch.stack([cos, -sin, offset[:, 0]], 1), torch.stack([sin, cos, offset[:, 1]], 1)], 1)
    return resample_affine(images, theta)


def random_canvas(images: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Place each image at a random offset on a ``size`` x ``size`` canvas of a random flat colour.

    Training a classifier this way makes it read its images at other input sizes and with borders around them,
    which is what a prompt ring does to a target's input.
    """
    n, c, h, w = images.shape
    colour = torch.rand(n, c, 1, 1, generator=generator).to(images)
    canvas = colour.expand(n, c, size, size).clone()
    top = torch.randint(size - h + 1, (n,), generator=generator)
    left = torch.randint(size - w + 1, (n,), generator=generator)
    rows = (top.view(n, 1) + torch.arange(h)).view(n, 1, h, 1).expand(n, c, h, w)
    cols = (left.view(n, 1) + torch.arange(w)).view(n, 1, 1, w).expand(n, c, h, w)
    index = rows * size + cols
    return canvas.view(n, c, -1).scatter(2, index.reshape(n, c, -1), images.reshape(n, c, -1)).view(n, c, size, size)
