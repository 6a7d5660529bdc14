"""The synthesizer interface: invert one frozen classifier into a batch of images per round, against the prompt.

Every method shares one small interface, so the trainer does not care which one runs: ``synthesize(student)`` runs
one round and returns the round's best batch (pixels in [0, 1]), ``active_terms`` says which loss terms apply, and
``state_dict`` / ``load_state_dict`` carry whatever persists across rounds. A method's constructor takes the
``KiOPTrainingArguments`` names of its knobs, so an argument, a synthesizer and a card call a knob the same.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from tqdm.auto import trange

from ..augment import random_resized_crop
from ..classifiers import FrozenClassifier
from ..losses import adversarial_loss
from .priors import NormLayerInputs

Student = Callable[[torch.Tensor], torch.Tensor]
ADAM_BETAS = (0.5, 0.999)  # the synthesis optimiser of DeepInversion, CMI and FastDFKD


class Synthesizer(ABC):
    """Model inversion of one frozen classifier, one round at a time.

    Each step draws images from the round's parametrisation and minimises, on an augmented view normalised with
    the inverted model's own statistics: ``bn_weight`` x the BatchNorm-statistics prior, ``oh_weight`` x the
    cross-entropy against the round's labels, ``adv_weight`` x the adversarial term against ``student`` (the
    prompted target reading the same classes), plus the method's own terms. The lowest-loss batch is returned, and
    ``last_losses`` holds that batch's terms and total.
    """

    fixed_parameters: frozenset[str] = frozenset()  # knobs of a base class that a method sets itself

    def __init__(
        self,
        model: FrozenClassifier,
        *,
        batch_size: int = 128,
        synthesis_steps: int = 200,
        synthesis_lr: float = 0.01,
        bn_weight: float = 1.0,
        oh_weight: float = 1.0,
        adv_weight: float = 0.5,
    ):
        self.model = model
        self.batch_size = batch_size
        self.synthesis_steps = synthesis_steps
        self.synthesis_lr = synthesis_lr
        self.weights = {"bn": bn_weight, "oh": oh_weight, "adv": adv_weight}
        self.statistics = NormLayerInputs(model)
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

    def synthesize(self, student: Student, progress: bool = False) -> torch.Tensor:
        """One round against ``student``; its best batch. ``progress`` shows a bar over the round's steps."""
        with self.statistics, fresh_autocast_casts():
            return self._synthesize(student, progress)

    def _synthesize(self, student: Student, progress: bool) -> torch.Tensor:
        device = self.model.mean.device
        optimizer = self._start_round(device)
        labels = self._round_labels(device)
        best_loss, best, best_terms = math.inf, None, {}
        for _ in trange(self.synthesis_steps, desc=type(self).__name__, leave=False, disable=not progress):
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
                best_terms = {name: torch.as_tensor(value).detach() for name, value in losses.items()}
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if best is None:
            raise FloatingPointError(
                f"synthesis of {type(self).__name__} diverged: every step's loss was NaN ({self.synthesis_steps} "
                "steps); lower synthesis_lr or turn mixed precision off"
            )
        self.last_losses = {name: float(value) for name, value in best_terms.items()} | {"total": best_loss}
        self.statistics.clear()
        self._end_round(best)
        return best

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned (nothing, for methods that keep nothing across rounds)."""


@contextmanager
def fresh_autocast_casts() -> Iterator[None]:
    """Under autocast, cast the weights afresh at every use. Autocast caches the low-precision copy of each
    trainable leaf (the generator's weights, the latent codes) until its block ends; a synthesis round runs its
    optimizer steps inside the block, so with the cache every step would still see the round's first weights and
    bf16 synthesis would hardly move (the BN prior stayed at twice its fp32 value after 20 rounds)."""
    cached = torch.is_autocast_cache_enabled()
    torch.clear_autocast_cache()
    torch.set_autocast_cache_enabled(False)
    try:
        yield
    finally:
        torch.set_autocast_cache_enabled(cached)
