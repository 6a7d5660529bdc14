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


def frequency_label_maps(counts: dict[str, torch.Tensor]) -> dict[str, list[int]]:
    """Data-free frequency-based maps, one-to-one and disjoint across sources (in the spirit of iterative label
    mapping for visual reprogramming).

    ``counts[task][i, j]`` is how often the prompted target predicted target class ``j`` for samples of source
    class ``i``. Pairs are taken greedily from the most frequent down, each source class and each target class
    at most once, so every source class gets the free target class its samples already lean to most.
    """
    num_target_classes = next(iter(counts.values())).shape[1]
    needed = sum(table.shape[0] for table in counts.values())
    if needed > num_target_classes:
        raise ValueError(
            f"too few target classes: the sources have {needed} classes in all and each needs its own target "
            f"class, but the target has only {num_target_classes}"
        )
    rows = [(task, i) for task, table in counts.items() for i in range(table.shape[0])]
    table = torch.cat([table.float() for table in counts.values()])
    order = torch.argsort(table.flatten(), descending=True, stable=True)  # ties: lower (row, column) first
    maps = {task: [-1] * table.shape[0] for task, table in counts.items()}
    taken_rows, taken_columns = set(), set()
    for flat in order.tolist():
        row, column = divmod(flat, num_target_classes)
        if row in taken_rows or column in taken_columns:
            continue
        task, source_class = rows[row]
        maps[task][source_class] = column
        taken_rows.add(row)
        taken_columns.add(column)
        if len(taken_rows) == len(rows):
            break
    return maps
