"""The image processor of a KiOP prompt: images of any kind in, the prompt's [0, 1] pixels out.

A prompt's tasks take unnormalised pixels in [0, 1] at the prompt's ``image_size`` with the channels its canvas
has (the target normalises them itself), so the processor only converts, channel-matches and resizes, through the
same ``kiop_hf.pixels`` functions that training and evaluation use. It is saved as ``preprocessor_config.json``
beside every prompt and registered with ``AutoImageProcessor``.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

from .pixels import pil_to_pixels, prepare


class KiOPImageProcessor(BaseImageProcessor):
    r"""Converts PIL images, NumPy arrays and tensors of any size, mode and dtype into a prompt's input.

    Args:
        image_size (`int`, *optional*, defaults to 32):
            Side of the prompt's input (its core); every image is resized to it (antialiased bilinear).
        num_channels (`int`, *optional*, defaults to 3):
            Channels of the prompt's canvas: 1 <-> 3 are converted (BT.601 luma for RGB -> grayscale).

    Inputs: a PIL image (any mode: L, RGB, RGBA, P, I;16, ...), a NumPy array (H, W) or (H, W, C) of uint8 0-255,
    uint16 0-65535 or floats in [0, 1], a tensor (C, H, W) or (N, C, H, W) of uint8 or floats in [0, 1], or a list
    of them.
    Output: ``BatchFeature({"pixel_values": (N, num_channels, image_size, image_size) float32 in [0, 1]})``.
    """

    model_input_names = ["pixel_values"]

    def __init__(self, image_size: int = 32, num_channels: int = 3, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
        if num_channels not in (1, 3):
            raise ValueError(f"num_channels must be 1 or 3, got {num_channels!r}")
        self.image_size = image_size
        self.num_channels = num_channels

    @classmethod
    def from_prompt_config(cls, config) -> KiOPImageProcessor:
        """The processor of a prompt, from its ``KiOPPromptConfig``."""
        return cls(image_size=config.image_size, num_channels=config.num_channels)

    def preprocess(
        self, images, return_tensors: str | None = "pt", num_channels: int | None = None, **kwargs
    ) -> BatchFeature:
        """Every image as the prompt's input, stacked into one batch (see the class docstring for what goes in).

        ``num_channels`` overrides the canvas's for one call: a source task's images come with the source's channel
        count (``KiOPModel.input_channels(task)``), as in training and evaluation; the model then serves them to
        the target's.
        """
        if kwargs:
            raise TypeError(f"KiOPImageProcessor takes return_tensors and num_channels only, got {sorted(kwargs)}")
        channels = num_channels or self.num_channels
        if isinstance(images, torch.Tensor) and images.ndim == 4:
            batch = [self._tensor(image, channels) for image in images]
        else:
            listed = images if isinstance(images, (list, tuple)) else [images]
            batch = [self._one(image, channels) for image in listed]
        if not batch:
            raise ValueError("no images given")
        return BatchFeature({"pixel_values": torch.stack(batch)}, tensor_type=return_tensors)

    def _one(self, image, channels: int) -> torch.Tensor:
        if isinstance(image, Image.Image):
            return pil_to_pixels(image, self.image_size, channels)
        if isinstance(image, np.ndarray):
            return self._array(image, channels)
        if isinstance(image, torch.Tensor):
            return self._tensor(image, channels)
        raise TypeError(f"expected a PIL image, a NumPy array or a torch tensor, got {type(image).__name__}")

    def _array(self, array: np.ndarray, channels: int) -> torch.Tensor:
        """(H, W) or (H, W, C) channels-last, as images are kept in NumPy."""
        if array.ndim == 2:
            array = array[..., None]
        if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
            raise ValueError(
                f"expected a NumPy image of shape (H, W) or (H, W, C) with C 1, 3 or 4, got {array.shape}"
            )
        array = np.array(array[..., :3])  # a writable copy; channels-last -> channels-first below
        if array.dtype == np.uint16:
            array = array / 65535.0
        elif array.dtype.kind in "iu" and array.dtype != np.uint8:
            raise ValueError(f"expected uint8, uint16 or float [0, 1] arrays, got {array.dtype}")
        return self._tensor(torch.from_numpy(array).permute(2, 0, 1), channels)

    def _tensor(self, image: torch.Tensor, channels: int) -> torch.Tensor:
        """(C, H, W) channels-first, as images are kept in torch."""
        if image.ndim != 3 or image.shape[0] not in (1, 3):
            raise ValueError(f"expected a tensor image of shape (C, H, W) with C 1 or 3, got {tuple(image.shape)}")
        if image.dtype != torch.uint8:
            image = image.float()
            if not torch.isfinite(image).all() or image.min() < 0 or image.max() > 1:
                raise ValueError("float images must hold pixels in [0, 1] (uint8 images 0-255)")
        return prepare(image[None], self.image_size, channels)[0].float()
