"""Synthesizers: invert one frozen classifier into a batch of images per round, against the current prompt.

All synthesizers share one small interface, so the trainer does not care which method runs:
``synthesize(student)`` runs one round and returns the round's best batch (pixels in [0, 1]), ``active_terms``
says which loss terms apply, and ``state_dict`` / ``load_state_dict`` carry whatever persists across rounds.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..augment import random_resized_crop
from ..classifiers import FrozenClassifier
from ..losses import adversarial_loss
from .generator import Generator, empty_generator
from .priors import BatchNormStatistics, MemoryBank, ProjectionHead, contrastive_loss

Student = Callable[[torch.Tensor], torch.Tensor]
ADAM_BETAS = (0.5, 0.999)  # the synthesis optimiser of DeepInversion, CMI and FastDFKD


class Synthesizer(ABC):
    """Model inversion of one frozen classifier, one round at a time.

    Each step draws images from the round's parametrisation and minimises, on an augmented view normalised with
    the inverted model's own statistics: ``bn_weight`` x the BatchNorm-statistics prior, ``oh_weight`` x the
    cross-entropy against uniformly drawn labels, ``adv_weight`` x the adversarial term against ``student`` (the
    prompted target reading the same classes), plus the method's own terms. The lowest-loss batch is returned.
    """

    def __init__(
        self,
        model: FrozenClassifier,
        *,
        batch_size: int = 128,
        steps: int = 200,
        lr: float = 0.01,
        bn_weight: float = 1.0,
        oh_weight: float = 1.0,
        adv_weight: float = 0.5,
    ):
        self.model = model
        self.batch_size = batch_size
        self.steps = steps
        self.lr = lr
        self.weights = {"bn": bn_weight, "oh": oh_weight, "adv": adv_weight}
        self.statistics = BatchNormStatistics(model)
        self.last_losses: dict[str, float] = {}

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.model.num_channels, self.model.image_size, self.model.image_size)

    @property
    def active_terms(self) -> list[str]:
        """Loss terms that act: weighted above zero and possible for this model (no BatchNorm, no BN prior)."""
        available = {"bn": len(self.statistics) > 0}
        return [name for name, weight in self.weights.items() if weight > 0 and available.get(name, True)]

    def describe_terms(self) -> str:
        """The active loss terms in words, and why the BN prior is off when the model has no BatchNorm."""
        text = f"{type(self).__name__} with terms {', '.join(self.active_terms)}"
        if len(self.statistics) == 0:
            text += " (no BatchNorm layers, so no BN-statistics prior)"
        return text

    @abstractmethod
    def _start_round(self, device: torch.device) -> torch.optim.Optimizer:
        """Set up this round's parametrisation; return the optimizer that adapts it."""

    def _round_labels(self, device: torch.device) -> torch.Tensor:
        """The classes this round's samples are pushed towards: drawn uniformly."""
        return torch.randint(self.model.num_labels, (self.batch_size,), device=device)

    @abstractmethod
    def _draw(self) -> torch.Tensor:
        """The round's current batch of images in [0, 1]."""

    def _method_losses(self, images: torch.Tensor, view: torch.Tensor) -> dict[str, torch.Tensor]:
        """Extra loss terms of a method, computed right after the inverted model has seen ``view``."""
        return {}

    def _end_round(self, best: torch.Tensor) -> None:
        """Hook for what a method keeps from a round."""

    def _view(self, images: torch.Tensor) -> torch.Tensor:
        return random_resized_crop(images, scale=(0.85, 1.0))

    def synthesize(self, student: Student) -> torch.Tensor:
        with self.statistics:
            return self._synthesize(student)

    def _synthesize(self, student: Student) -> torch.Tensor:
        device = self.model.mean.device
        optimizer = self._start_round(device)
        labels = self._round_labels(device)
        best_loss, best = math.inf, None
        for _ in range(self.steps):
            images = self._draw()
            view = self._view(images)
            self.statistics.clear()
            teacher_logits = self.model(view).float()  # losses in fp32, also under mixed precision
            losses = {"bn": self.statistics.loss(), "oh": F.cross_entropy(teacher_logits, labels)}
            losses.update(self._method_losses(images, view))
            if self.weights["adv"] > 0:
                losses["adv"] = adversarial_loss(student(view).float(), teacher_logits)
            loss = sum(self.weights.get(name, 1.0) * value for name, value in losses.items())
            if loss.item() < best_loss:
                best_loss, best = loss.item(), images.detach().float().clone()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if best is None:
            raise FloatingPointError(
                f"synthesis of {type(self).__name__} diverged: every step's loss was NaN ({self.steps} steps); lower "
                "the synthesis learning rate or turn mixed precision off"
            )
        self.last_losses = {name: float(torch.as_tensor(value).detach()) for name, value in losses.items()}
        self.last_losses["total"] = best_loss
        self.statistics.clear()
        self._end_round(best)
        return best

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned (nothing, for methods that keep nothing across rounds)."""


class CMISynthesizer(Synthesizer):
    """Contrastive model inversion (Fang et al. 2021), the synthesizer of KiOP's research code.

    A generator is optimised with its latent batch each round; the method re-initialises it every round
    (``reset_generator=True``), while keeping it across rounds (only the latent batch is new) reaches good samples
    in far fewer steps per round. A contrastive term
    (``cr_weight``) makes each sample's local view recognise its own global view on projected per-layer feature
    means, against negatives from a memory bank of earlier rounds' samples, which keeps the data bank diverse.
    """

    def __init__(
        self,
        model: FrozenClassifier,
        *,
        latent_dim: int = 256,
        cr_weight: float = 0.8,
        temperature: float = 0.6,
        bank_size: int = 40_960,
        num_negatives: int = 4_096,
        head_dim: int = 256,
        head_lr: float = 1e-3,
        reset_generator: bool = True,
        **kwargs,
    ):
        super().__init__(model, **kwargs)
        self.latent_dim = latent_dim
        self.reset_generator = reset_generator
        self.generator: Generator | None = None
        self.weights["cr"] = cr_weight
        self.temperature = temperature
        self.num_negatives = num_negatives
        self.head_lr = head_lr
        feature_dim = self.statistics.feature_dim
        self.contrastive = cr_weight > 0 and feature_dim > 0
        if self.contrastive:
            device = model.mean.device
            self.head = ProjectionHead(feature_dim, min(feature_dim, 2048), head_dim).to(device)
            self.memory = MemoryBank(bank_size, 2 * feature_dim)

    @property
    def active_terms(self) -> list[str]:
        return [t for t in super().active_terms if t != "cr" or self.contrastive]

    def _start_round(self, device):
        channels, size, _ = self.image_shape
        if self.reset_generator or self.generator is None:
            self.generator = Generator(self.latent_dim, size, channels).to(device).train()
        self.z = torch.randn(self.batch_size, self.latent_dim, device=device, requires_grad=True)
        groups = [{"params": [*self.generator.parameters(), self.z], "lr": self.lr}]
        if self.contrastive:
            groups.append({"params": self.head.parameters(), "lr": self.head_lr})
        return torch.optim.Adam(groups, betas=ADAM_BETAS)

    def _draw(self):
        return self.generator(self.z)

    def _local_features(self, images: torch.Tensor) -> torch.Tensor:
        self.statistics.clear()
        self.model(random_resized_crop(images, scale=(0.1, 0.5)))
        return self.statistics.features()

    def _method_losses(self, images, view):
        if not self.contrastive:
            return {}
        global_features = self.statistics.features()
        local_features = self._local_features(images)
        negatives = self.memory.sample(self.num_negatives)
        return {"cr": contrastive_loss(self.head, local_features, global_features, negatives, self.temperature)}

    def _end_round(self, best):
        if not self.contrastive:
            return
        with torch.no_grad():
            self.statistics.clear()
            self.model(self._view(best))
            global_features = self.statistics.features()
            local_features = self._local_features(best)
        self.memory.add(torch.cat([local_features, global_features], dim=1))
        self.statistics.clear()

    def state_dict(self):
        state = {}
        if self.contrastive:
            state |= {"head": self.head.state_dict(), "memory": self.memory.state_dict()}
        if not self.reset_generator and self.generator is not None:
            state["generator"] = self.generator.state_dict()
        return state

    def load_state_dict(self, state):
        if self.contrastive:
            self.head.load_state_dict(state["head"])
            self.memory.load_state_dict(state["memory"])
        if "generator" in state:
            channels, size, _ = self.image_shape
            self.generator = empty_generator(self.latent_dim, size, channels, self.model.mean.device)
            self.generator.load_state_dict(state["generator"])


class DeepInversionSynthesizer(Synthesizer):
    """DeepInversion (Yin et al. 2020): the pixels themselves are optimised, with a total-variation smoothness prior.

    No generator and no contrastive head: cheaper per step, and a second, independent synthesis method.
    """

    def __init__(self, model: FrozenClassifier, *, tv_weight: float = 1e-4, lr: float = 0.05, **kwargs):
        super().__init__(model, lr=lr, **kwargs)
        self.weights["tv"] = tv_weight

    def _start_round(self, device):
        self.logits = torch.randn(self.batch_size, *self.image_shape, device=device, requires_grad=True)
        return torch.optim.Adam([self.logits], lr=self.lr, betas=ADAM_BETAS)

    def _draw(self):
        return torch.sigmoid(self.logits)

    def _method_losses(self, images, view):
        tv = (images[..., 1:, :] - images[..., :-1, :]).abs().mean() + (images[..., 1:] - images[..., :-1]).abs().mean()
        return {"tv": tv * images[0].numel()}

