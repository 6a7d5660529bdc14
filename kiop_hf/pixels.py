"""The one pixel boundary: every image, wherever it comes from, becomes unnormalised float pixels in [0, 1].

Models in kiop_hf take (batch, C, H, W) float pixels in [0, 1] and normalise them themselves with their own mean
and std, so callers never normalise. The conversions that get an image there live here, and nowhere else:
uint8 -> [0, 1] (``to_unit_range``), grayscale <-> RGB (``match_channels``, BT.601 luma), and resizing
(``resize``, antialiased bilinear), used alike for training, evaluation, real image sets and serving.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# ITU-R BT.601 luma weights: the usual RGB -> grayscale conversion (PIL's "L" mode uses them too).
_LUMA = (0.299, 0.587, 0.114)
_SINGLE_CHANNEL_MODES = {"1", "L", "LA"}
_WIDE_RANGES = {"I": 255.0, "I;16": 65535.0, "F": 1.0}  # PIL modes whose values are not 8-bit


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float pixels in [0, 1]; float images pass unchanged."""
    return images.float().div(255.0) if images.dtype == torch.uint8 else images


def can_convert_channels(have: int, want: int) -> bool:
    return have == want or {have, want} == {1, 3}


def match_channels(pixel_values: torch.Tensor, num_channels: int) -> torch.Tensor:
    """Return float ``pixel_values`` (batch, C, H, W) with ``num_channels`` channels: 1 -> 3 repeats, 3 -> 1 takes
    luma."""
    have = pixel_values.shape[1]
    if have == num_channels:
        return pixel_values
    if have == 1 and num_channels == 3:
        return pixel_values.expand(-1, 3, -1, -1)
    if have == 3 and num_channels == 1:
        weights = pixel_values.new_tensor(_LUMA).view(1, 3, 1, 1)
        return (pixel_values * weights).sum(dim=1, keepdim=True)
    raise ValueError(f"cannot convert {have}-channel images to {num_channels} channels (only 1 <-> 3 is defined)")


def resize(pixel_values: torch.Tensor, size: int) -> torch.Tensor:
    """Float (batch, C, H, W) pixels at ``size`` x ``size``: antialiased bilinear, unchanged when already there."""
    if tuple(pixel_values.shape[-2:]) == (size, size):
        return pixel_values
    return F.interpolate(pixel_values, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def prepare(images: torch.Tensor, size: int, num_channels: int) -> torch.Tensor:
    """uint8 or float images of any size and channel count (1 or 3) -> float pixels in [0, 1] at ``size``."""
    return resize(match_channels(to_unit_range(images), num_channels), size)


def pil_to_pixels(image: Image.Image, size: int, num_channels: int) -> torch.Tensor:
    """One PIL image of any mode -> (C, H, W) float pixels in [0, 1], channel-matched and resized by ``prepare``."""
    if image.mode in _WIDE_RANGES:  # wide grayscale, by its mode's fixed range (I: clipped at 255, as PIL's "L")
        array = np.asarray(image, dtype=np.float32) / _WIDE_RANGES[image.mode]
        pixels = torch.from_numpy(array.clip(0, 1))[None, None]
    else:
        image = image.convert("L" if image.mode in _SINGLE_CHANNEL_MODES else "RGB")
        array = np.array(image)  # a writable copy: PIL's buffer is read-only
        pixels = torch.from_numpy(array[..., None] if array.ndim == 2 else array).permute(2, 0, 1)[None]
    return prepare(pixels, size, num_channels)[0]


def to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """Float pixels in [0, 1] -> uint8 0-255 (rounded), the compact form real image sets are kept in."""
    return pixels.clamp(0, 1).mul(255).round().to(torch.uint8)


def checked_pixels(pixel_values) -> torch.Tensor:
    """The model boundary: a (batch, C, H, W) float tensor of unnormalised pixels in [0, 1].

    uint8 images (0-255) are divided by 255 and float64 is cast to float32, the two unambiguous conversions;
    anything else that is not such a batch is refused with what was expected: a missing batch dimension,
    channels-last or 5-D tensors, float pixels in 0-255, NaN or infinite pixels.
    """
    expected = "a batch of images (batch, channels, height, width) with pixels in [0, 1]"
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(f"expected {expected} as a torch.Tensor, got {type(pixel_values).__name__}")
    shape = tuple(pixel_values.shape)
    if pixel_values.ndim != 4:
        hint = "; add the batch dimension with images.unsqueeze(0)" if pixel_values.ndim == 3 else ""
        raise ValueError(f"expected {expected}, got a {pixel_values.ndim}-D tensor of shape {shape}{hint}")
    if shape[1] not in (1, 3) and shape[-1] in (1, 3):
        raise ValueError(
            f"expected {expected}, got shape {shape}, which looks channels-last; use images.permute(0, 3, 1, 2)"
        )
    if pixel_values.dtype == torch.uint8:
        return to_unit_range(pixel_values)
    if not pixel_values.is_floating_point():
        raise TypeError(f"expected {expected} as floats (or uint8 0-255), got dtype {pixel_values.dtype}")
    if pixel_values.dtype == torch.float64:
        pixel_values = pixel_values.float()
    if pixel_values.numel() == 0:  # an empty batch: nothing to check
        return pixel_values
    low, high = pixel_values.aminmax()
    if not (torch.isfinite(low) & torch.isfinite(high)):  # a NaN anywhere makes both NaN
        raise ValueError(f"expected {expected}; the images hold NaN or infinite pixels")
    if low < -1e-3 or high > 1 + 1e-3:
        hint = " (normalised images? the model normalises itself)" if low < 0 else " (pixels in 0-255? divide by 255)"
        raise ValueError(f"expected {expected}, got pixels from {low.item():.3g} to {high.item():.3g}{hint}")
    return pixel_values
