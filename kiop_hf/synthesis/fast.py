"""Fast, meta-learned synthesis (FastDFKD): a few adaptation steps per round from a learned initialisation."""

from __future__ import annotations

import copy

import torch

from ..classifiers import FrozenClassifier
from .base import ADAM_BETAS
from .cmi import CMISynthesizer
from .generator import Generator, empty_generator


class FastSynthesizer(CMISynthesizer):
    """FastDFKD (Fang et al., "Up to 100x Faster Data-Free Knowledge Distillation", AAAI 2022).

    CMI spends hundreds of generator steps per round, although the batches of one model share most of their
    features. FastDFKD instead keeps a *meta* generator and a meta latent code, an initialisation that reaches a
    new batch in a few steps: each round copies them into fast weights, adapts those for ``synthesis_steps`` (2-10)
    steps of CMI's terms (BN-statistics prior, class term, adversarial term against the prompt, and the contrastive
    term if ``cr_weight`` > 0; off by default, it is the costliest part of a CMI step), keeps the round's best batch,
    then moves the meta weights towards the adapted ones (first-order Reptile: meta += ``meta_step`` x
    (fast - meta)). The BN prior compares the running statistics with a momentum average of batch statistics
    across rounds (``bn_momentum``), so a short adaptation does not over-fit one batch's statistics.

    Each slot of the batch keeps one class (balanced over the classes; with more classes than the batch holds,
    they rotate over rounds), so its meta latent code learns where that class starts; fresh noise around it keeps
    every round's batch new. Generators, latent codes and the inner
    optimizer are allocated once and reset in place each round, so a round costs its steps and nothing more.
    """

    fixed_parameters = frozenset({"reset_generator"})  # the meta generator always persists

    def __init__(
        self,
        model: FrozenClassifier,
        *,
        synthesis_steps: int = 5,
        synthesis_lr: float = 0.01,
        latent_lr: float = 0.05,
        meta_step: float = 0.5,
        bn_momentum: float = 0.9,
        cr_weight: float = 0.0,
        **kwargs,
    ):
        super().__init__(
            model,
            synthesis_steps=synthesis_steps,
            synthesis_lr=synthesis_lr,
            cr_weight=cr_weight,
            reset_generator=False,
            **kwargs,
        )
        if not 0 < meta_step <= 1:
            raise ValueError(f"meta_step must be in (0, 1], got {meta_step}")
        if not 0 <= bn_momentum < 1:
            raise ValueError(f"bn_momentum must be in [0, 1), got {bn_momentum}")
        self.latent_lr = latent_lr
        self.meta_step = meta_step
        self.statistics.momentum = bn_momentum
        self.meta_generator: Generator | None = None
        self.rounds_done = 0

    def _allocate(self, device: torch.device, loading: bool = False) -> None:
        """Meta and fast generators, latent codes and the inner optimizer, once per run."""
        channels, size, _ = self.image_shape
        if loading:  # weights about to be loaded: leave the run's random numbers untouched
            self.meta_generator = empty_generator(self.latent_dim, size, channels, device).train()
        else:
            self.meta_generator = Generator(self.latent_dim, size, channels).to(device).train()
        self.generator = copy.deepcopy(self.meta_generator)
        self.meta_latent = torch.zeros(self.batch_size, self.latent_dim, device=device)
        self.noise = torch.zeros_like(self.meta_latent)
        self.z = torch.zeros_like(self.meta_latent, requires_grad=True)
        groups = [
            {"params": self.generator.parameters(), "lr": self.synthesis_lr},
            {"params": [self.z], "lr": self.latent_lr},
        ]
        if self.contrastive:
            groups.append({"params": self.head.parameters(), "lr": self.head_lr})
        self.optimizer = torch.optim.Adam(groups, betas=ADAM_BETAS)

    def _start_round(self, device):
        if self.meta_generator is None:
            self._allocate(device)
        with torch.no_grad():
            for fast, meta in zip(self.generator.state_dict().values(), self.meta_generator.state_dict().values()):
                fast.copy_(meta)
            self.noise.normal_()
            self.z.copy_(self.meta_latent + self.noise)
        for state in self.optimizer.state.values():  # a fresh Adam each round, without allocating one
            for value in state.values():
                value.zero_()
        return self.optimizer

    def _round_labels(self, device):
        """Every class in every round when the batch holds them all; otherwise the classes rotate over rounds."""
        classes = self.model.num_labels
        offset = (self.rounds_done * self.batch_size) % classes if classes > self.batch_size else 0
        return (offset + torch.arange(self.batch_size, device=device)) % classes

    def _end_round(self, best):
        with torch.no_grad():  # Reptile: the meta weights take a step towards the adapted ones
            for meta, fast in zip(self.meta_generator.state_dict().values(), self.generator.state_dict().values()):
                if meta.is_floating_point():
                    meta.lerp_(fast, self.meta_step)
                else:
                    meta.copy_(fast)
            self.meta_latent.add_(self.z - self.meta_latent - self.noise, alpha=self.meta_step)
        self.statistics.commit()
        self.rounds_done += 1
        super()._end_round(best)

    def state_dict(self):
        state = {key: value for key, value in super().state_dict().items() if key != "generator"}
        if self.meta_generator is not None:
            state |= {
                "meta_generator": self.meta_generator.state_dict(),
                "meta_latent": self.meta_latent.clone(),
                "statistics": self.statistics.state_dict(),
                "rounds_done": self.rounds_done,
            }
        return state

    def load_state_dict(self, state):
        super().load_state_dict({key: value for key, value in state.items() if key in ("head", "memory")})
        if "meta_generator" in state:
            self._allocate(self.model.mean.device, loading=True)
            self.meta_generator.load_state_dict(state["meta_generator"])
            self.meta_latent.copy_(state["meta_latent"])
            self.statistics.load_state_dict(state.get("statistics", {}))  # empty for a model without BatchNorm
            self.rounds_done = int(state.get("rounds_done", 0))
