"""The image processor of a KiOP prompt: images of any kind in, the prompt's [0, 1] pixels out.

A prompt's tasks take unnormalised pixels in [0, 1] at the prompt's ``image_size`` with the channels its canvas
has (the target normalises them itself), so the processor only converts, channel-matches and resizes, through the
same ``kiop_hf.pixels`` functions that training and evaluation use. It is saved as ``preprocessor_config.json``
beside every prompt and registered with ``AutoImageProcessor``.
"""

from __future__ import annotations

from dataclasses import dataclass

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
        size (`dict[str, int]`, *optional*):
            transformers' name for the side: `{"height": 32, "width": 32}` (square: a prompt's core is); it
            overrides `image_size`.
        do_resize (`bool`, *optional*, defaults to `True`):
            Resize to the side; with `False` every image must already have it.
        do_rescale (`bool`, *optional*, defaults to `True`):
            Scale integer pixels by `rescale_factor` into [0, 1]; with `False` images must come as floats in [0, 1]
            (a prompt takes nothing else: there is no normalisation step, the target normalises itself).
        rescale_factor (`float`, *optional*, defaults to `1/255`):
            The scale of integer pixels (16-bit images default to 1/65535).
        do_convert_rgb (`bool`, *optional*):
            Convert PIL images to RGB first (before the canvas's channel conversion).

    Inputs: a PIL image (any mode: L, RGB, RGBA, P, I;16, ...), a NumPy array (H, W) or (H, W, C) of uint8 0-255,
    uint16 0-65535 or floats in [0, 1], a tensor (C, H, W) or (N, C, H, W) of uint8 or floats in [0, 1], or a list
    of them. Each argument above can also be given to a call, for that call.
    Output: ``BatchFeature({"pixel_values": (N, num_channels, image_size, image_size) float32 in [0, 1]})``.
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        image_size: int = 32,
        num_channels: int = 3,
        size: dict[str, int] | int | None = None,
        do_resize: bool = True,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_convert_rgb: bool | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        image_size = _side(size) if size is not None else image_size
        if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
            raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
        if num_channels not in (1, 3):
            raise ValueError(f"num_channels must be 1 or 3, got {num_channels!r}")
        _check_rescale_factor(rescale_factor)
        self.image_size = image_size
        self.size = {"height": image_size, "width": image_size}
        self.num_channels = num_channels
        self.do_resize = do_resize
        self.do_rescale = do_rescale
        self.rescale_factor = rescale_factor
        self.do_convert_rgb = do_convert_rgb

    @classmethod
    def from_prompt_config(cls, config) -> KiOPImageProcessor:
        """The processor of a prompt, from its ``KiOPPromptConfig``."""
        return cls(image_size=config.image_size, num_channels=config.num_channels)

    def preprocess(
        self,
        images,
        return_tensors: str | None = "pt",
        num_channels: int | None = None,
        size: dict[str, int] | int | None = None,
        do_resize: bool | None = None,
        do_rescale: bool | None = None,
        rescale_factor: float | None = None,
        do_convert_rgb: bool | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Every image as the prompt's input, stacked into one batch (see the class docstring for what goes in).

        ``num_channels`` overrides the canvas's for one call: a source task's images come with the source's channel
        count (``KiOPModel.input_channels(task)``), as in training and evaluation; the model then serves them to
        the target's. The other arguments override the processor's own for one call.
        """
        if kwargs:
            raise TypeError(
                "KiOPImageProcessor takes return_tensors, num_channels, size, do_resize, do_rescale, rescale_factor "
                f"and do_convert_rgb, got {sorted(kwargs)}"
            )
        if rescale_factor is not None:
            _check_rescale_factor(rescale_factor)
        call = _Call(
            side=_side(size) if size is not None else self.image_size,
            channels=num_channels or self.num_channels,
            resize=self.do_resize if do_resize is None else do_resize,
            rescale=self.do_rescale if do_rescale is None else do_rescale,
            factor=rescale_factor,  # None: the processor's, or 1/65535 for 16-bit images when that is the default
            default_factor=self.rescale_factor,
            convert_rgb=self.do_convert_rgb if do_convert_rgb is None else do_convert_rgb,
        )
        if isinstance(images, torch.Tensor) and images.ndim == 4:
            batch = [self._tensor(image, call) for image in images]
        else:
            listed = images if isinstance(images, (list, tuple)) else [images]
            batch = [self._one(image, call) for image in listed]
        if not batch:
            raise ValueError("no images given")
        return BatchFeature({"pixel_values": torch.stack(batch)}, tensor_type=return_tensors)

    def _one(self, image, call: _Call) -> torch.Tensor:
        if isinstance(image, Image.Image):
            if call.convert_rgb:
                image = image.convert("RGB")
            if call.rescale and call.factor is None and call.default_factor == 1 / 255 and call.resize:
                return pil_to_pixels(image, call.side, call.channels)  # each PIL mode by its own range
            return self._array(np.array(image), call)
        if isinstance(image, np.ndarray):
            return self._array(image, call)
        if isinstance(image, torch.Tensor):
            return self._tensor(image, call)
        raise TypeError(f"expected a PIL image, a NumPy array or a torch tensor, got {type(image).__name__}")

    def _array(self, array: np.ndarray, call: _Call) -> torch.Tensor:
        """(H, W) or (H, W, C) channels-last, as images are kept in NumPy."""
        if array.ndim == 2:
            array = array[..., None]
        if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
            raise ValueError(
                f"expected a NumPy image of shape (H, W) or (H, W, C) with C 1, 3 or 4, got {array.shape}"
            )
        array = np.array(array[..., :3])  # a writable copy; channels-last -> channels-first below
        if array.dtype.kind in "iu" and array.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"expected uint8, uint16 or float [0, 1] arrays, got {array.dtype}")
        if array.dtype == np.uint16:
            array = array.astype(np.float64) * call.scale(1 / 65535) if call.rescale else _refuse_integers(call)
        return self._tensor(torch.from_numpy(array).permute(2, 0, 1), call)

    def _tensor(self, image: torch.Tensor, call: _Call) -> torch.Tensor:
        """(C, H, W) channels-first, as images are kept in torch."""
        if image.ndim != 3 or image.shape[0] not in (1, 3):
            raise ValueError(f"expected a tensor image of shape (C, H, W) with C 1 or 3, got {tuple(image.shape)}")
        if not image.is_floating_point():
            if not call.rescale:
                _refuse_integers(call)
            image = image.double() * call.scale(1 / 255)
        image = image.float()
        if not torch.isfinite(image).all() or image.min() < 0 or image.max() > 1:
            raise ValueError(
                "float images must hold pixels in [0, 1], and integer ones must land there times rescale_factor "
                f"(1/255 for uint8 0-255); got {image.min().item():.4g} to {image.max().item():.4g}"
            )
        if not call.resize and tuple(image.shape[-2:]) != (call.side, call.side):
            raise ValueError(
                f"do_resize=False but the image is {image.shape[-2]}x{image.shape[-1]}; the prompt takes "
                f"{call.side}x{call.side} (resize it, or leave do_resize on)"
            )
        return prepare(image[None], call.side, call.channels)[0].float()


@dataclass
class _Call:
    """One call's settings."""

    side: int
    channels: int
    resize: bool
    rescale: bool
    factor: float | None
    default_factor: float
    convert_rgb: bool | None

    def scale(self, for_bit_depth: float) -> float:
        """The factor for integer pixels: the call's, else 1/65535 for 16-bit ones when the processor keeps the
        8-bit default, else the processor's."""
        if self.factor is not None:
            return self.factor
        return for_bit_depth if self.default_factor == 1 / 255 else self.default_factor


def _side(size) -> int:
    if isinstance(size, int) and not isinstance(size, bool):
        return size
    if isinstance(size, dict) and set(size) == {"height", "width"} and size["height"] == size["width"]:
        return size["height"]
    if isinstance(size, dict) and "shortest_edge" in size and len(size) == 1:
        return size["shortest_edge"]
    raise ValueError(f"size must be {{'height': n, 'width': n}} (a prompt's core is square) or an int, got {size!r}")


def _check_rescale_factor(factor) -> None:
    if not isinstance(factor, (int, float)) or isinstance(factor, bool) or not 0 < factor <= 1:
        raise ValueError(f"rescale_factor must be a number in (0, 1], got {factor!r}")


def _refuse_integers(call: _Call):
    raise ValueError("do_rescale=False takes float images with pixels in [0, 1]; integer images need do_rescale")
