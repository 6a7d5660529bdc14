"""Checkpoints of a KiOP run that survive a kill at any instant and never unpickle anything.

A checkpoint is a folder ``checkpoints/checkpoint_N`` holding, per process, ``run_state_<rank>.safetensors`` (every
tensor: prompt rings, optimizer buffers, random-generator states, data banks, synthesizer weights) and
``run_state_<rank>.json`` (every other value: round, history, scheduler, label maps, the run's fingerprint). Each
is first written into ``checkpoints/.tmp-checkpoint_N`` and the folder is renamed into place only once every
process has written it, so a folder named ``checkpoint_N`` is always complete; older checkpoints are rotated away
only after the new one is in place. Reading a run folder someone else wrote runs no code: safetensors and JSON
only (accelerate's ``save_state`` pickles optimizers, schedulers and random states, so it is not used).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

CHECKPOINTS = "checkpoints"
_NAME = re.compile(r"checkpoint_(\d+)")
_TEMPORARY = ".tmp-"


def checkpoint_folders(output_dir: str | os.PathLike) -> list[Path]:
    """The complete checkpoints of a run, oldest first (temporary folders of an interrupted save are not)."""
    folder = Path(output_dir) / CHECKPOINTS
    found = [p for p in folder.glob("checkpoint_*") if p.is_dir() and _NAME.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(_NAME.fullmatch(p.name).group(1)))


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    folders = checkpoint_folders(output_dir)
    return folders[-1] if folders else None


def next_index(output_dir: str | os.PathLike) -> int:
    latest = latest_checkpoint(output_dir)
    return int(_NAME.fullmatch(latest.name).group(1)) + 1 if latest else 0


def split_state(state: dict, prefix: str = "") -> tuple[dict[str, torch.Tensor], dict]:
    """A nested state dict as flat ``a/b/c`` keys: tensors for safetensors, everything else for JSON."""
    tensors, values = {}, {}
    for key, value in state.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            more_tensors, more_values = split_state(value, f"{name}/")
            tensors |= more_tensors
            values |= more_values
        elif isinstance(value, torch.Tensor):
            tensors[name] = value.detach().cpu().contiguous()
        else:
            values[name] = value
    return tensors, values


def join_state(flat: dict) -> dict:
    """The inverse of ``split_state`` (given both halves merged)."""
    state: dict = {}
    for key, value in flat.items():
        *parents, leaf = key.split("/")
        node = state
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return state


def random_states(device: torch.device) -> dict:
    """Every random generator a run draws from (Python, NumPy, torch CPU and this process's CUDA device), as
    tensors and plain values."""
    version, python_state, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "state": list(python_state), "gauss": gauss},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_random_states(state: dict, device: torch.device) -> None:
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss"]))
    numpy = state["numpy"]
    keys = numpy["keys"].numpy().astype(np.uint32)
    np.random.set_state((numpy["kind"], keys, numpy["position"], numpy["has_gauss"], numpy["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def write_checkpoint(output_dir, index: int, state: dict, accelerator, total_limit: int | None) -> Path:
    """Write this process's ``state`` into checkpoint ``index``: all processes into a temporary folder, then the
    main process renames it into place and rotates the oldest complete checkpoints beyond ``total_limit``."""
    root = Path(output_dir) / CHECKPOINTS
    final, temporary = root / f"checkpoint_{index}", root / f"{_TEMPORARY}checkpoint_{index}"
    if accelerator.is_main_process:
        for stale in [*root.glob(f"{_TEMPORARY}*"), final]:  # a save that was killed midway left these
            if stale.exists():
                print(f"[kiop_hf] removing the incomplete checkpoint {stale}")
                shutil.rmtree(stale)
        temporary.mkdir(parents=True)
    accelerator.wait_for_everyone()
    rank = accelerator.process_index
    tensors, values = split_state(state)
    save_file(tensors, temporary / f"run_state_{rank}.safetensors")
    (temporary / f"run_state_{rank}.json").write_text(json.dumps(values))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        os.replace(temporary, final)
        if total_limit is not None:
            for old in checkpoint_folders(output_dir)[:-total_limit]:  # renamed first: never half-deleted in place
                doomed = old.with_name(f"{_TEMPORARY}{old.name}")
                os.replace(old, doomed)
                shutil.rmtree(doomed)
    accelerator.wait_for_everyone()
    return final


def read_checkpoint(folder: str | os.PathLike, rank: int) -> dict:
    """The state one process wrote into a checkpoint folder (safetensors and JSON only)."""
    folder = Path(folder)
    tensors_file, values_file = folder / f"run_state_{rank}.safetensors", folder / f"run_state_{rank}.json"
    for path in (tensors_file, values_file):
        if not path.is_file():
            raise FileNotFoundError(
                f"{folder} is not a complete kiop_hf checkpoint for process {rank}: no {path.name}"
            )
    try:
        values = json.loads(values_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{values_file} is not valid JSON ({error}); the checkpoint is corrupt") from error
    try:
        tensors = load_file(tensors_file)
    except SafetensorError as error:
        raise ValueError(
            f"{tensors_file} is not a readable safetensors file ({error}); the checkpoint is corrupt"
        ) from error
    return join_state(tensors | values)


def check_fingerprint(recorded: dict, current: dict, folder: Path, overrides=()) -> None:
    """Refuse to resume a different run: every field that defines the run must match the checkpoint's, but those
    the user allowed to change (``overrides``)."""
    keys = (recorded.keys() | current.keys()) - set(overrides)
    differing = sorted(key for key in keys if recorded.get(key) != current.get(key))
    if differing:
        details = "; ".join(f"{key}: checkpoint {recorded.get(key)!r}, now {current.get(key)!r}" for key in differing)
        raise ValueError(
            f"{folder} belongs to a different run ({details}); resume with the same settings (resume_overrides "
            "allows a new number of rounds), or train into a new output_dir"
        )
