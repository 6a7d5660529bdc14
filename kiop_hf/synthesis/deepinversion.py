"""DeepInversion: the pixels themselves are optimised, with a total-variation smoothness prior."""

from __future__ import annotations

import torch

from ..classifiers import FrozenClassifier
from .base import ADAM_BETAS, Synthesizer


class DeepInversionSynthesizer(Synthesizer):
    """DeepInversion (Yin et al., "Dreaming to Distill", CVPR 2020).

    No generator and no contrastive head: cheaper per step, and a second, independent synthesis method. Pixels live
    as unconstrained values squashed into [0, 1] by a sigmoid, so Adam never has to clip them.
    """

    def __init__(self, model: FrozenClassifier, *, tv_weight: float = 1e-4, synthesis_lr: float = 0.05, **kwargs):
        super().__init__(model, synthesis_lr=synthesis_lr, **kwargs)
        self.weights["tv"] = tv_weight

    def _start_round(self, device):
        self.unsquashed_pixels = torch.randn(self.batch_size, *self.image_shape, device=device, requires_grad=True)
        return torch.optim.Adam([self.unsquashed_pixels], lr=self.synthesis_lr, betas=ADAM_BETAS)

    def _draw(self):
        return torch.sigmoid(self.unsquashed_pixels)

    def _method_losses(self, images, view):
        tv = (images[..., 1:, :] - images[..., :-1, :]).abs().mean() + (
            images[..., 1:] - images[..., :-1]
        ).abs().mean()
        return {"tv": tv * images[0].numel()}
