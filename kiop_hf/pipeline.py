"""The main job as one straight line: load models, synthesize and store knowledge, evaluate, save.

Used by ``kiop-hf train`` and ``examples/train_kiop.py``; without model arguments it runs the embedded default
on the reference zoo (built on first use).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .classifiers import load_classifier
from .modeling_kiop import KiOPModel
from .trainer import KiOPTrainer
from .training_args import KiOPTrainingArguments

# The embedded default: one zoo source into the zoo target, data-free, sized for a few minutes on 2 CPU cores.
# Against the reference schedule it runs far fewer prompt updates, so it raises the prompt's learning rate (at the
# reference 0.8 the ring pixels barely leave grey) and weighs the BatchNorm prior down (on the zoo models it
# otherwise drowns the class term). It synthesises with the fast synthesizer: many short rounds, each a few steps
# from a meta-learned generator, which feed a far larger bank than CMI can in the same time (benchmarks/budget.py).
DEFAULT_SOURCE = "fashion-mnist-resnet"
DEFAULT_TARGET = "letters-resnet10t"
DEFAULT_SCHEDULE = dict(
    synthesizer="fast", rounds=40, synthesis_steps=5, kd_steps=10, batch_size=64, learning_rate=8.0, bn_weight=1.0,
)  # fmt: skip
# The embedded default before the fast synthesizer: 10 CMI rounds of 30 steps, the generator kept across rounds.
CMI_SCHEDULE = dict(
    synthesizer="cmi", rounds=10, synthesis_steps=30, kd_steps=40, batch_size=64, learning_rate=8.0,
    memory_bank_size=4096, num_negatives=1024, bn_weight=0.1, reset_generator=False,
)  # fmt: skip
SCHEDULES = {"fast": DEFAULT_SCHEDULE, "cmi": CMI_SCHEDULE}


@dataclass
class KiOPJob:
    """What to connect and where to evaluate; ``training`` holds the run's ``KiOPTrainingArguments``.

    ``sources`` maps task names to model ids/folders; ``eval_sets`` maps task names (``"target"`` for the
    target's own task) to labelled test sets (datasets, saved dataset folders, image folders or Hub ids).
    """

    training: KiOPTrainingArguments
    target: str | None = None
    sources: dict[str, str] = field(default_factory=dict)
    image_size: int = 32
    ring_sizes: list[int] = field(default_factory=lambda: [36, 64])
    preservation_images: str | None = None
    transfer_images: str | dict[str, str] | None = None
    eval_sets: dict[str, str] = field(default_factory=dict)
    resume_from_checkpoint: bool | str = False


def with_zoo_defaults(job: KiOPJob, zoo_root: str | Path | None = None, log=print) -> KiOPJob:
    """Fill a job without models with the embedded default: zoo source and target, zoo test sets."""
    from .zoo.build import DEFAULT_ROOT, REFERENCE_ZOO, build_zoo, dataset_path

    root = Path(zoo_root or DEFAULT_ROOT)
    specs = {spec.name: spec for spec in REFERENCE_ZOO}
    build_zoo(root, [specs[DEFAULT_SOURCE], specs[DEFAULT_TARGET]], log=log)
    job.target = str(root / DEFAULT_TARGET)
    job.sources = {specs[DEFAULT_SOURCE].dataset: str(root / DEFAULT_SOURCE)}
    job.eval_sets = {
        specs[DEFAULT_SOURCE].dataset: str(dataset_path(root, specs[DEFAULT_SOURCE].dataset)),
        "target": str(dataset_path(root, specs[DEFAULT_TARGET].dataset)),
    }
    if job.training.preservation == "B" and job.preservation_images is None:
        job.preservation_images = str(dataset_path(root, specs[DEFAULT_TARGET].dataset))
    if job.training.transfer_data != "synthetic" and job.transfer_images is None:
        job.transfer_images = str(dataset_path(root, specs[DEFAULT_SOURCE].dataset))  # its labels are not read
    return job


def run_kiop(job: KiOPJob, log=print) -> dict:
    """Load the models, train the prompt (synthesize <-> store knowledge), evaluate it, save it with its card, and
    push it when the training arguments ask; returns the results."""
    target = load_classifier(job.target)
    sources = {name: load_classifier(path) for name, path in job.sources.items()}
    model = KiOPModel.from_models(target, sources, image_size=job.image_size, ring_sizes=job.ring_sizes, seed=job.training.seed)
    trainer = KiOPTrainer(
        model, sources, job.training, preservation_images=job.preservation_images,
        transfer_images=job.transfer_images, eval_sets=job.eval_sets,
    )  # fmt: skip
    trainer.train(resume_from_checkpoint=job.resume_from_checkpoint)
    results = trainer.results
    if trainer.accelerator.is_main_process:
        for key, value in results.items():
            log(f"{key:>28}: {value:.4f}" if isinstance(value, float) else f"{key:>28}: {value}")
        log(f"prompt saved to {job.training.output_dir}")
    return results
