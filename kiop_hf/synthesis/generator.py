"""The small image generator of the synthesis period (DCGAN-style, as in CMI and KiOP's research code)."""

from __future__ import annotations

import torch
from torch import nn


class Generator(nn.Module):
    """Latent ``z`` -> image in [0, 1]: linear to a (side/4)^2 map, two upsample+conv+BN+LeakyReLU stages, conv,
    sigmoid."""

    def __init__(self, latent_dim: int = 256, image_size: int = 32, num_channels: int = 3, width: int = 64):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"the generator draws images whose side is a multiple of 4, got {image_size}")
        self.init_size = image_size // 4
        self.project = nn.Sequential(nn.Linear(latent_dim, 2 * width * self.init_size**2))
        self.blocks = nn.Sequential(
            nn.BatchNorm2d(2 * width),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width, num_channels, 3, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z).view(z.shape[0], -1, self.init_size, self.init_size)
        return self.blocks(x)


def empty_generator(latent_dim: int, image_size: int, num_channels: int, device: torch.device) -> Generator:
    """A generator whose weights are about to be loaded, built without drawing from the run's random numbers (a
    resumed run must draw exactly what the uninterrupted run drew)."""
    with torch.device("meta"):
        generator = Generator(latent_dim, image_size, num_channels)
    return generator.to_empty(device=device)
