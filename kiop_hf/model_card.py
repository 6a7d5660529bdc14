"""Model cards for prompts, written from the template in ``model_cards/`` with huggingface_hub's ``ModelCard``.

The card's YAML is what the Hub indexes (library, base model as an adapter relation, sources, datasets, an
evaluation ``model-index``); its body is for people: usage, tasks, geometry, training setup, results, and
pictures (the learned prompt, synthetic samples per source, training curves) saved as PNG files beside it.
"""

from __future__ import annotations

import os
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from .card_assets import image_grid, line_plot, prompt_picture
from .configuration_kiop import TARGET_TASK

CARD_MARKER = "library_name: kiop_hf"  # a README without it was written by a person and is never overwritten
PROMPT_PICTURE = "prompt.png"
CURVES_PICTURE = "training_curves.png"
FRAMEWORKS = ("kiop_hf", "torch", "transformers", "timm", "accelerate", "huggingface_hub", "safetensors")
TRANSFER_REGIMES = {
    "synthetic": "synthetic (each source inverted; data-free)",
    "unlabelled": "real unlabelled images",
    "mixed": "synthetic and real unlabelled images",
}
PRESERVATION_REGIMES = {
    "BF": "synthetic (target inverted; data-free)",
    "B": "real unlabelled target-domain images",
    "none": "none",
}


def card_template() -> str:
    return resources.files("kiop_hf.model_cards").joinpath("kiop_prompt.md").read_text()


def hub_id(name) -> str | None:
    """``name`` if it is a Hub repo id rather than a local path, else ``None`` (the card only links Hub ids)."""
    if not isinstance(name, str) or os.path.exists(name):
        return None
    try:
        validate_repo_id(name.removeprefix("hf-hub:"))
    except HFValidationError:
        return None
    return name.removeprefix("hf-hub:")


def display_name(name) -> str | None:
    """How the card names a model: its Hub id, or the folder name of a local model (never a local path)."""
    return hub_id(name) or (Path(str(name)).name if name else None)


def samples_picture(task: str) -> str:
    return f"samples_{task}.png"


def _training_summary(args, history: list[dict] | None, synthesis_terms: dict[str, str] | None) -> dict:
    if args is None:
        return {}
    summary = {
        "source knowledge read from": TRANSFER_REGIMES[args.transfer_data],
        "target task preserved with": PRESERVATION_REGIMES[args.preservation],
        "synthesis method": args.synthesizer if synthesis_terms else "none",
        "rounds": args.rounds,
        "synthesis steps per round": args.synthesis_steps,
        "knowledge-storing steps per round": args.kd_steps,
        "batch size": args.batch_size,
        "learning rate (SGD, cosine)": args.learning_rate,
        "temperature": args.temperature,
        "seed": args.seed,
    }
    for task, terms in (synthesis_terms or {}).items():
        summary[f"synthesis of {task}"] = terms
    if history:
        summary["final knowledge-storing loss"] = f"{history[-1]['kd/total']:.4f}"
    return summary


def _eval_results(results: dict[str, float], eval_sets: dict[str, str]) -> list[EvalResult]:
    """One ``model-index`` entry per evaluated task (accuracy), plus the unprompted target for retention."""
    entries = []
    for task, dataset in eval_sets.items():
        if task not in results:
            continue
        dataset_type = hub_id(dataset) or (Path(dataset).name if isinstance(dataset, (str, os.PathLike)) else "custom")
        metrics = [("accuracy", f"accuracy ({task})", results[task])]
        if task == TARGET_TASK and "target/unprompted" in results:
            metrics.append(("accuracy", "accuracy (target without prompt)", results["target/unprompted"]))
        entries += [
            EvalResult(
                task_type="image-classification", dataset_type=dataset_type, dataset_name=task, dataset_split="test",
                metric_type=metric, metric_name=name, metric_value=round(value, 4),
            )  # fmt: skip
            for metric, name, value in metrics
        ]
    return entries


def _framework_versions() -> dict[str, str]:
    versions = {}
    for package in FRAMEWORKS:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            continue
    return versions


def write_model_card(
    model,
    output_dir: str | os.PathLike,
    *,
    args=None,
    history: list[dict] | None = None,
    results: dict[str, float] | None = None,
    eval_sets: dict[str, str] | None = None,
    datasets: list[str] | None = None,
    samples: dict | None = None,
    synthesis_terms: dict[str, str] | None = None,
    repo_id: str | None = None,
) -> Path:
    """Write ``README.md`` and its pictures for ``model`` (a ``KiOPModel``, or a bare ``KiOPVisualPrompt``) in
    ``output_dir``.

    ``samples`` maps task names to a few synthetic images (shown as a grid per source); ``eval_sets`` maps the
    tasks in ``results`` to the test sets they were measured on; ``datasets`` lists the data the run used;
    ``synthesis_terms`` says which loss terms each inverted model's synthesizer used.
    A README that a person wrote (not generated by kiop_hf) is left untouched.
    """
    output_dir = Path(output_dir)
    path = output_dir / "README.md"
    if path.exists() and CARD_MARKER not in path.read_text():
        return path
    output_dir.mkdir(parents=True, exist_ok=True)
    prompt, target = getattr(model, "prompt", model), getattr(model, "target", None)
    config = prompt.config
    repo_id = repo_id or output_dir.resolve().name
    target_id = hub_id(config.target_name_or_path)

    prompt_picture(prompt).save(output_dir / PROMPT_PICTURE)
    sample_pictures = {}
    for task, images in (samples or {}).items():
        image_grid(images[:32]).save(output_dir / samples_picture(task))
        sample_pictures[task] = samples_picture(task)
    curves = {}
    if history:
        keys = [key for key in history[0] if key.startswith("kd/")]
        line_plot({key: [logs[key] for logs in history] for key in keys}, "round", "loss").save(output_dir / CURVES_PICTURE)
        curves = {"path": CURVES_PICTURE, "terms": keys}

    eval_results = _eval_results(results or {}, eval_sets or {})
    card_data = ModelCardData(
        library_name="kiop_hf",
        base_model=target_id,
        base_model_relation="adapter" if target_id else None,
        pipeline_tag="image-classification",
        tags=["kiop", "visual-prompt", "model-reprogramming", "knowledge-transfer"]
        + (["data-free"] if config.data_regime == {"transfer": "synthetic", "preservation": "BF"} else []),
        license="apache-2.0",
        source_models=[s for s in (hub_id(source["name_or_path"]) for source in config.sources) if s] or None,
        datasets=sorted({d for d in (hub_id(d) for d in datasets or []) if d}) or None,
        model_name=repo_id if eval_results else None,
        eval_results=eval_results or None,
    )
    weights = output_dir / "model.safetensors"
    card = ModelCard.from_template(
        card_data,
        template_str=card_template(),
        title=f"KiOP prompt: {', '.join(config.source_names) or 'no sources'} on {display_name(config.target_name_or_path)}",
        repo_id=repo_id,
        target_id=display_name(config.target_name_or_path) or "a custom target",
        target_link=f"https://huggingface.co/{target_id}" if target_id else None,
        target_revision=config.target_revision,
        target_num_labels=config.target_num_labels,
        num_parameters=f"{prompt.num_parameters():,}",
        target_share=f"{100 * prompt.num_parameters() / sum(p.numel() for p in target.parameters()):.2f}%"
        if target is not None
        else None,
        num_rings=len(config.ring_sizes),
        ring_sizes=config.ring_sizes,
        image_size=config.image_size,
        num_channels=config.num_channels,
        sources=[
            source | {"name_or_path": display_name(source["name_or_path"]), "link": _link(source["name_or_path"])}
            for source in config.sources
        ],
        label_mapping=config.label_mapping,
        prompt_bytes=f"{weights.stat().st_size / 1024:.0f} KB" if weights.exists() else None,
        prompt_picture=PROMPT_PICTURE,
        sample_pictures=sample_pictures,
        curves=curves,
        training=_training_summary(args, history, synthesis_terms),
        fast_synthesis=bool(synthesis_terms) and getattr(args, "synthesizer", None) == "fast",
        results={k: f"{v:.4f}" if isinstance(v, float) and k != "train_seconds" else v for k, v in (results or {}).items()},
        frameworks=_framework_versions(),
    )
    card.save(path)
    return path


def training_card(trainer) -> dict:
    """``write_model_card`` keywords for a training run: its arguments, history, results, the data it named, the
    newest synthetic images of each source, and each synthesizer's loss terms."""
    named = [trainer.preservation_images, *(trainer.transfer_images or {}).values(), *trainer.eval_sets.values()]
    return {
        "args": trainer.args,
        "history": trainer.history,
        "results": trainer.results,
        "eval_sets": trainer.eval_sets,
        "datasets": [str(data) for data in named if isinstance(data, (str, os.PathLike))],
        "samples": {
            name: trainer.banks[name].images[-32:].cpu()
            for name in trainer.sources
            if len(trainer.banks.get(name, ())) > 0
        },
        "synthesis_terms": {name: synthesizer.describe_terms() for name, synthesizer in trainer.synthesizers.items()},
    }


def _link(name) -> str | None:
    found = hub_id(name)
    return f"https://huggingface.co/{found}" if found else None

