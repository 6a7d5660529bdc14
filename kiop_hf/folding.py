"""A frozen network's faster twin: each BatchNorm folded into the convolution before it, channels-last memory.

A frozen classifier in eval mode computes the same function with its BatchNorm layers folded into the preceding
convolutions (torch.fx's ``fuse``): one pass per layer fewer forward and backward, and one activation fewer kept
for the backward pass, which every prompt update and every adversarial synthesis step runs through the target.
Channels-last memory speeds the convolutions up further (on CPU, a resnet18 at 128 px: 1.11x folded, 1.40x with
channels-last). Models that torch.fx cannot trace, or whose folded twin does not reproduce their logits, keep
running as they are.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

logger = logging.getLogger(__name__)


def folded_network(model: nn.Module, example: torch.Tensor) -> nn.Module | None:
    """``model`` with its BatchNorm layers folded (a copy; the original is untouched), or None where nothing can be
    folded or the copy's outputs on ``example`` (normalised inputs) differ from the original's."""
    from torch.fx.experimental.optimization import fuse

    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return None
    try:
        folded = fuse(model)
    except Exception as error:  # noqa: BLE001  (torch.fx raises many kinds on untraceable control flow)
        logger.debug("BatchNorm not folded: %s cannot be traced (%s)", type(model).__name__, error)
        return None
    if not any(isinstance(m, nn.Conv2d) for m in folded.modules()):
        return None
    folded = folded.to(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast(example.device.type, enabled=False):
        expected = logits_of(model(example))
        got = logits_of(folded(example.contiguous(memory_format=torch.channels_last)))
    if not torch.allclose(got, expected, rtol=1e-3, atol=1e-3 * expected.abs().max().item()):
        logger.debug("BatchNorm not folded: the folded %s changes its outputs", type(model).__name__)
        return None
    return folded


def logits_of(output) -> torch.Tensor:
    """The logits of a classifier's output: a tensor (timm, plain modules) or a transformers output."""
    return output if isinstance(output, torch.Tensor) else output.logits
