"""Grayscale <-> RGB conversion, so grayscale and colour models can feed each other."""

from __future__ import annotations

import torch

# ITU-R BT.601 luma weights: the usual RGB -> grayscale conversion (PIL's "L" mode uses them too).
_LUMA = (0.299, 0.587, 0.114)


def can_convert_channels(have: int, want: int) -> bool:
    return have == want or {have, want} == {1, 3}


def match_channels(pixel_values: torch.Tensor, num_channels: int) -> torch.Tensor:
    """Return ``pixel_values`` (batch, C, H, W) with ``num_channels`` channels: 1 -> 3 repeats, 3 -> 1 takes luma."""
    have = pixel_values.shape[1]
    if have == num_channels:
        return pixel_values
    if have == 1 and num_channels == 3:
        return pixel_values.expand(-1, 3, -1, -1)
    if have == 3 and num_channels == 1:
        weights = pixel_values.new_tensor(_LUMA).view(1, 3, 1, 1)
        return (pixel_values * weights).sum(dim=1, keepdim=True)
    raise ValueError(f"cannot convert {have}-channel images to {num_channels} channels (only 1 <-> 3 is defined)")
