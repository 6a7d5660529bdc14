"""What a KiOP run is given, checked before any long work starts: sources, image sets, eval sets, weights.

Each problem is refused with the argument's name and what it expected, so a bad input fails in the first second
of a run rather than after hours of synthesis.
"""

from __future__ import annotations

from .configuration_kiop import TARGET_TASK
from .evaluation import check_test_set


def check_training_inputs(model, sources: dict, args, preservation_images, transfer_images, eval_sets):
    """Raise a ``ValueError`` naming the first input ``KiOPTrainer`` cannot use; return ``transfer_images`` as a
    dict by source task (``None`` when the sources are read from synthetic data only)."""
    config = model.config
    if sorted(sources) != sorted(config.source_names):
        raise ValueError(
            f"the prompt serves sources {config.source_names}, but sources for {sorted(sources)} were given"
        )
    for name, source in sources.items():
        expected = config.source(name)["class_names"]
        if source.num_labels != len(expected):
            raise ValueError(
                f"source {name!r} has {source.num_labels} classes; the prompt's label map expects {len(expected)}"
            )
    if args.preservation == "B" and preservation_images is None:
        raise ValueError('preservation="B" needs preservation_images: unlabelled real images of the target\'s domain')
    if args.preservation != "B" and preservation_images is not None:
        raise ValueError(
            f'preservation_images were given but preservation="{args.preservation}" would ignore them; '
            'set preservation="B" to preserve the target with them'
        )
    if args.push_to_hub:  # a run that ends on the Hub must name models another machine can load
        from .hub import check_publishable

        check_publishable(config.to_dict(), "push_to_hub: the prompt")
    unknown_weights = sorted(set(args.source_weights or {}) - set(sources))
    if unknown_weights:
        raise ValueError(f"source_weights names unknown tasks {unknown_weights}; the sources are {sorted(sources)}")
    unknown = sorted(set(eval_sets or {}) - set(config.task_names))
    if unknown:
        raise ValueError(f"eval_sets names unknown tasks {unknown}; this prompt's tasks are {config.task_names}")
    for task, test_set in (eval_sets or {}).items():
        classes = config.target_num_labels if task == TARGET_TASK else len(config.source(task)["class_names"])
        check_test_set(task, test_set, classes)
    if args.transfer_data != "synthetic":
        return _per_source(transfer_images, sources, args.transfer_data)
    if transfer_images is not None:
        raise ValueError(
            'transfer_images were given but transfer_data="synthetic" would ignore them; set '
            'transfer_data="unlabelled" or "mixed"'
        )
    return None


def _per_source(images, sources: dict, mode: str) -> dict:
    """``transfer_images`` as a dict by task name: one set shared by every source, or one per source."""
    if images is None:
        raise ValueError(
            f'transfer_data="{mode}" needs transfer_images: unlabelled real images of the sources\' domain'
        )
    if not isinstance(images, dict):
        return dict.fromkeys(sources, images)
    missing = sorted(set(sources) - set(images))
    unknown = sorted(set(images) - set(sources))
    if missing or unknown:
        raise ValueError(f"transfer_images must name every source exactly: missing {missing}, unknown {unknown}")
    return images
