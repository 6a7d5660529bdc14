"""Per-sample random views of image batches: the synthesis' differentiable crops, and the knowledge-storing views
(shifts, flips, mixup and CutMix) that the source and the prompted target both read."""

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


def shift_and_flip(images: torch.Tensor, max_shift: int, flip: bool) -> torch.Tensor:
    """Each image moved by a whole number of pixels (up to ``max_shift`` either way, border pixels repeated) and,
    with ``flip``, mirrored left-right with probability 1/2. Whole-pixel moves land on pixel centres: no blur."""
    n, _, h, w = images.shape
    device = images.device
    shift = torch.randint(-max_shift, max_shift + 1, (n, 2), device=device).float()
    mirror = torch.where(torch.rand(n, device=device) < 0.5, -1.0, 1.0) if flip else torch.ones(n, device=device)
    zero = torch.zeros(n, device=device)
    rows = [torch.stack([mirror, zero, 2 * shift[:, 0] / w], 1), torch.stack([zero, 1 + zero, 2 * shift[:, 1] / h], 1)]
    return resample_affine(images, torch.stack(rows, 1))


def mix(images: torch.Tensor, method: str, probability: float, alpha: float) -> torch.Tensor:
    """A share ``probability`` of the images mixed with another image of the batch: ``"mixup"`` blends the two
    (weight from Beta(alpha, alpha)), ``"cutmix"`` pastes a box of the other whose area is that weight. The rest
    are returned as they are."""
    n, _, h, w = images.shape
    device = images.device
    partner = images[torch.randperm(n, device=device)]
    chosen = torch.rand(n, device=device) < probability
    weight = torch.distributions.Beta(alpha, alpha).sample((n,)).to(device)
    if method == "mixup":
        weight = weight.view(n, 1, 1, 1)
        mixed = weight * images + (1 - weight) * partner
    elif method == "cutmix":
        side = (1 - weight).sqrt()  # the pasted box covers 1 - weight of the image
        box_h, box_w = (side * h).round().long(), (side * w).round().long()
        top = (torch.rand(n, device=device) * (h - box_h + 1)).long()
        left = (torch.rand(n, device=device) * (w - box_w + 1)).long()
        ys, xs = torch.arange(h, device=device).view(1, h, 1), torch.arange(w, device=device).view(1, 1, w)
        rows = (ys >= top.view(n, 1, 1)) & (ys < (top + box_h).view(n, 1, 1))
        inside = rows & (xs >= left.view(n, 1, 1)) & (xs < (left + box_w).view(n, 1, 1))
        mixed = torch.where(inside.unsqueeze(1), partner, images)
    else:
        raise ValueError(f"unknown mixing method {method!r}; choose 'mixup' or 'cutmix'")
    return torch.where(chosen.view(n, 1, 1, 1), mixed, images)
