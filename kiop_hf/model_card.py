"""Model cards for trained prompts, written from the template in ``model_cards/`` with huggingface_hub."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from .modeling_kiop import KiOPModel


def card_template() -> str:
    return resources.files("kiop_hf.model_cards").joinpath("kiop_prompt.md").read_text()


def _training_summary(args, history: list[dict] | None) -> dict:
    if args is None:
        return {}
    transfer = {
        "synthetic": "synthetic (each source inverted; data-free)",
        "unlabelled": "real unlabelled images",
        "mixed": "synthetic and real unlabelled images",
    }
    preservation = {"BF": "synthetic (target inverted; data-free)", "B": "real unlabelled target-domain images", "none": "none"}
    summary = {
        "source knowledge read from": transfer[args.transfer_data],
        "target task preserved with": preservation[args.preservation],
        "synthesis method": args.synthesizer,
        "rounds": args.rounds,
        "synthesis steps per round": args.synthesis_steps,
        "knowledge-storing steps per round": args.kd_steps,
        "batch size": args.batch_size,
        "learning rate (SGD, cosine)": args.learning_rate,
        "temperature": args.temperature,
        "seed": args.seed,
    }
    if history:
        summary["final knowledge-storing loss"] = f"{history[-1]['kd/total']:.4f}"
    return summary


def write_model_card(
    model: KiOPModel,
    output_dir: str | os.PathLike,
    *,
    args=None,
    history: list[dict] | None = None,
    results: dict[str, float] | None = None,
    repo_id: str | None = None,
) -> Path:
    """Write ``README.md`` for the prompt in ``output_dir``; an existing README a user wrote is left alone."""
    path = Path(output_dir) / "README.md"
    if path.exists() and "library_name: kiop_hf" not in path.read_text():
        return path
    config = model.config
    target_id = config.target_name_or_path or "a custom target"
    card_data = ModelCardData(
        library_name="kiop_hf",
        base_model=config.target_name_or_path,
        base_model_relation="adapter" if config.target_name_or_path else None,
        pipeline_tag="image-classification",
        tags=["kiop", "visual-prompt", "data-free-knowledge-transfer", "model-reprogramming"],
        license="apache-2.0",
    )
    weights = Path(output_dir) / "model.safetensors"
    card = ModelCard.from_template(
        card_data,
        template_str=card_template(),
        title=f"KiOP prompt: {', '.join(config.source_names) or 'no sources'} on {target_id}",
        repo_id=repo_id or Path(output_dir).name,
        target_id=target_id,
        target_link=f"https://huggingface.co/{target_id}" if config.target_name_or_path else "#",
        target_num_labels=config.target_num_labels,
        num_parameters=f"{model.prompt.num_parameters():,}",
        num_rings=len(config.ring_sizes),
        ring_sizes=config.ring_sizes,
        image_size=config.image_size,
        num_channels=config.num_channels,
        sources=config.sources,
        prompt_bytes=f"{weights.stat().st_size / 1024:.0f} KB" if weights.exists() else "small",
        training=_training_summary(args, history),
        results={k: f"{v:.4f}" for k, v in (results or {}).items()},
    )
    card.save(path)
    return path
