"""How each source's classes are assigned to the target's classes (injective, disjoint across sources)."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def random_label_maps(num_source_classes: Sequence[int], num_target_classes: int, seed: int = 0) -> list[list[int]]:
    """The paper's fixed random map: one random permutation of the target classes, cut into disjoint slices."""
    needed = sum(num_source_classes)
    if needed > num_target_classes:
        raise ValueError(
            f"too few target classes: the sources have {needed} classes in all and each needs its own target "
            f"class, but the target has only {num_target_classes}"
        )
    order = torch.randperm(num_target_classes, generator=torch.Generator().manual_seed(seed)).tolist()
    maps, start = [], 0
    for count in num_source_classes:
        maps.append(sorted(order[start : start + count]))
        start += count
    return maps
