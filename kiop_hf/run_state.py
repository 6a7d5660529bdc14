"""What a checkpoint holds of a training run, and how a run is restored from it.

``checkpointing`` writes and reads the files (safetensors + JSON, atomically); this module decides their contents:
the prompt, optimizer, scheduler, random states, synthetic data banks, synthesizer states, label maps and the run's
fingerprint, which a resumed run must match (``resume_overrides`` names what may differ).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import torch

from .checkpointing import (
    CHECKPOINTS,
    check_fingerprint,
    checkpoint_folders,
    random_states,
    read_checkpoint,
    set_random_states,
)

# Training arguments that define a run: a resumed run must have the same ones.
RUN_DEFINING = (
    "rounds",
    "synthesis_steps",
    "kd_steps",
    "batch_size",
    "seed",
    "seed_per_process",
    "learning_rate",
    "momentum",
    "weight_decay",
    "temperature",
    "preservation",
    "preservation_weight",
    "transfer_data",
    "label_mapping",
    "label_mapping_refresh_rounds",
    "synthesizer",
    "data_bank_size",
    "recent_share",
    "bank_min_confidence",
    "kd_shift",
    "kd_flip",
    "kd_mix",
    "kd_mix_prob",
    "kd_mix_alpha",
    "source_weights",
    "mixed_precision",
    "synthesis_lr",
    "bn_weight",
    "oh_weight",
    "adv_weight",
    "cr_weight",
    "cr_temperature",
    "memory_bank_size",
    "num_negatives",
    "head_dim",
    "reset_generator",
    "latent_lr",
    "meta_step",
    "bn_momentum",
)


def fingerprint(trainer) -> dict:
    """What makes a run this run: the models, the rings, the process count and the schedule."""
    config, args = trainer.model.config, trainer.args
    identity = {
        "target": [config.target_name_or_path, config.target_revision],
        "sources": [[s["name"], s["name_or_path"], s["revision"]] for s in config.sources],
        "image_size": config.image_size,
        "ring_sizes": list(config.ring_sizes),
        "num_processes": trainer.accelerator.num_processes,
    }
    resolved = args.synthesis_settings()  # a knob left to the method compares as the value it ran with
    return json.loads(json.dumps(identity | {name: resolved.get(name, getattr(args, name)) for name in RUN_DEFINING}))


def capture(trainer) -> dict:
    """Everything the next round depends on, on this process."""
    config = trainer.model.config
    return {
        "run": {
            "round": trainer.round,
            "history": trainer.history,
            "fingerprint": fingerprint(trainer),
            "label_mapping": config.label_mapping,
            "label_maps": {source["name"]: source["label_map"] for source in config.sources},
        },
        "prompt": {str(i): ring for i, ring in enumerate(trainer.model.prompt.rings)},
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "random": random_states(trainer.accelerator.device),
        # synthetic banks only: real images are read again from their source
        "bank": {name: trainer.banks[name].state_dict() for name in trainer.synthesizers},
        "synthesizer": {name: synthesizer.state_dict() for name, synthesizer in trainer.synthesizers.items()},
    }


def restore(trainer, folder: str | Path | None) -> None:
    """Restore ``trainer`` (set up, not yet trained) from ``folder``, or the run's latest checkpoint."""
    args, device = trainer.args, trainer.accelerator.device
    if folder:
        folder = Path(folder)
        state = read_checkpoint(folder, trainer.accelerator.process_index)
    else:
        folder, state = _newest_intact(trainer)
    if "run" not in state or "fingerprint" not in state["run"]:
        raise ValueError(
            f"{folder} was written by an earlier kiop_hf (accelerate's pickled format) and cannot be resumed"
        )
    run = state["run"]
    check_fingerprint(run["fingerprint"], fingerprint(trainer), folder, args.resume_overrides)
    trainer.round, trainer.history = run["round"], run["history"]
    if run["label_mapping"] == "frequency":
        trainer.write_prompt_config(run["label_maps"])
    with torch.no_grad():
        for i, ring in enumerate(trainer.model.prompt.rings):
            ring.copy_(state["prompt"][str(i)])
    optimizer = state["optimizer"]
    trainer.optimizer.load_state_dict(
        {
            "state": {int(k): v for k, v in optimizer.get("state", {}).items()},
            "param_groups": optimizer["param_groups"],
        }
    )
    trainer.scheduler.load_state_dict(state["scheduler"])
    if trainer.scheduler.T_max != args.rounds * args.kd_steps:  # resume_overrides: a new number of rounds
        stretch_schedule(trainer.optimizer, trainer.scheduler, args.rounds * args.kd_steps)
    for name, synthesizer in trainer.synthesizers.items():
        trainer.banks[name].load_state_dict(_to_device(state.get("bank", {}).get(name, {}), device))
        if state.get("synthesizer", {}).get(name):
            synthesizer.load_state_dict(_to_device(state["synthesizer"][name], device))
    set_random_states(state["random"], device)  # last: nothing after it may draw before the next round


def _newest_intact(trainer) -> tuple[Path, dict]:
    """The newest checkpoint every process can read, warning about each newer one that was damaged after it
    landed (a checkpoint is complete when it lands, so damage is a disk's or a person's doing)."""
    accelerator, output_dir = trainer.accelerator, trainer.args.output_dir
    folders = checkpoint_folders(output_dir)
    if not folders:
        raise FileNotFoundError(f"no checkpoint to resume from under {Path(output_dir) / CHECKPOINTS}")
    for folder in reversed(folders):
        try:
            state, problem = read_checkpoint(folder, accelerator.process_index), None
        except (FileNotFoundError, ValueError) as error:
            state, problem = None, error
        readable = torch.tensor(float(state is not None), device=accelerator.device)
        if accelerator.reduce(readable, reduction="sum").item() == accelerator.num_processes:
            return folder, state
        warnings.warn(
            f"checkpoint {folder} is damaged ({problem or 'on another process'}); resuming from the one before it",
            stacklevel=3,
        )
    raise ValueError(f"every checkpoint under {Path(output_dir) / CHECKPOINTS} is damaged; train afresh")


def stretch_schedule(optimizer, scheduler, total_steps: int) -> None:
    """Continue the cosine decay as if the run had always had ``total_steps`` (the scheduler's recursive form
    would stay at its last rate, 0 at the end of a finished run)."""
    scheduler.T_max = total_steps
    step = min(scheduler.last_epoch, total_steps)
    rates = [
        scheduler.eta_min + (base - scheduler.eta_min) * (1 + math.cos(math.pi * step / total_steps)) / 2
        for base in scheduler.base_lrs
    ]
    for group, rate in zip(optimizer.param_groups, rates):
        group["lr"] = rate
    scheduler._last_lr = rates


def _to_device(state: dict, device) -> dict:
    return {
        k: _to_device(v, device) if isinstance(v, dict) else v.to(device) if isinstance(v, torch.Tensor) else v
        for k, v in state.items()
    }
