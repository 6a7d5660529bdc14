"""Pictures for a prompt's model card: the learned prompt, synthetic samples per source, training curves.

Drawn with Pillow only (no plotting library among the dependencies); each returns a ``PIL.Image``.
"""

from __future__ import annotations

import math

import torch
from PIL import Image, ImageDraw, ImageFont

from .pixels import to_unit_range

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def to_pil(image: torch.Tensor, scale: int = 1) -> Image.Image:
    """One (C, H, W) image in [0, 1] (or uint8) as a PIL image, enlarged ``scale`` times without smoothing."""
    array = (to_unit_range(image).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    picture = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    return picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)


@torch.no_grad()
def prompt_picture(prompt, scale: int = 4) -> Image.Image:
    """The full learned prompt (every ring) around a black square where the input image goes."""
    config = prompt.config
    task = config.source_names[-1] if config.sources else None
    blank = torch.zeros(1, config.num_channels, config.image_size, config.image_size, device=prompt.device)
    return to_pil(prompt(blank, task)[0], scale)


def image_grid(
    images: torch.Tensor, labels: list[str] | None = None, columns: int = 8, scale: int = 3, padding: int = 2
) -> Image.Image:
    """A grid of (N, C, H, W) images, row by row, on a white background, each with its caption below if given."""
    rows = math.ceil(len(images) / columns)
    size = images.shape[-1] * scale
    caption = 12 if labels else 0
    cell_width, cell_height = size + padding, size + caption + padding
    grid = Image.new("RGB", (columns * cell_width + padding, rows * cell_height + padding), "white")
    draw, font = ImageDraw.Draw(grid), ImageFont.load_default()
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        x, y = padding + column * cell_width, padding + row * cell_height
        grid.paste(to_pil(image, scale).convert("RGB"), (x, y))
        if labels:
            text = labels[index]
            while text and draw.textlength(text, font=font) > size:  # fit the caption to the cell
                text = text[:-1]
            draw.text((x, y + size), text, fill="black", font=font)
    return grid


def line_plot(series: dict[str, list[float]], x_label: str, y_label: str, size=(640, 360)) -> Image.Image:
    """Curves over a shared x (1, 2, ...), on a log y axis when the values span more than a factor of 20."""
    width, height = size
    left, right, top, bottom = 64, 150, 16, 40
    plot = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(plot)
    font = ImageFont.load_default()
    values = [v for curve in series.values() for v in curve if v > 0]
    low, high = (min(values), max(values)) if values else (1.0, 1.0)
    log = high / low > 20
    transform = (lambda v: math.log10(max(v, low))) if log else (lambda v: v)
    y0, y1 = transform(low), transform(high)
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    length = max((len(curve) for curve in series.values()), default=1)

    def point(i: int, v: float) -> tuple[float, float]:
        x = left + (width - left - right) * (i / max(length - 1, 1))
        y = top + (height - top - bottom) * (1 - (transform(v) - y0) / (y1 - y0))
        return x, y

    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    for fraction in (0.0, 0.5, 1.0):
        value = y0 + fraction * (y1 - y0)
        label = f"{10**value:.3g}" if log else f"{value:.3g}"
        y = top + (height - top - bottom) * (1 - fraction)
        draw.text((4, y - 6), label, fill="black", font=font)
    for i in sorted({0, length // 2, length - 1}):
        x, _ = point(i, low)
        draw.text((x - 4, height - bottom + 4), str(i + 1), fill="black", font=font)
    draw.text(((left + width - right) // 2 - 16, height - 16), x_label, fill="black", font=font)
    draw.text((4, height - 16), y_label + (" (log)" if log else ""), fill="black", font=font)
    for index, (name, curve) in enumerate(series.items()):
        colour = PALETTE[index % len(PALETTE)]
        points = [point(i, v) for i, v in enumerate(curve)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for x, y in points:
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        draw.line(
            [width - right + 10, top + 8 + 16 * index, width - right + 30, top + 8 + 16 * index], fill=colour, width=3
        )
        draw.text((width - right + 36, top + 2 + 16 * index), name, fill="black", font=font)
    return plot
