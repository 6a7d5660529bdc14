"""Saving a prompt over an existing one so that a kill at any instant leaves the old prompt or the new one.

The new files are written into a staging folder beside the destination; only once they are all complete does a
journal file mark the destination as being committed, and the files are moved into place (``config.json`` last).
A save killed while staging leaves the old prompt untouched (the staging folder is removed by the next save); one
killed while committing is completed by the next save or load of that folder, from the complete staging folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from transformers.utils import CONFIG_NAME

from .clip import CLASS_VECTORS_FILE
from .model_card import CURVES_PICTURE, PROMPT_PICTURE

PROMPT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # a prompt's name, and so its subfolder's

JOURNAL = ".kiop-committing"
PROMPT_FILES = ("config.json", "model.safetensors")
# Which prompts a folder holds: the active one at the top, each other one in a subfolder of its name (PEFT's
# layout for adapters), so from_pretrained loads them all back.
PROMPT_INDEX = "prompts.json"
# What a prompt folder consists of, and all that publishing it uploads: a training folder also holds checkpoints
# and tracker logs, and a user's folder may hold anything (a .env, private data), none of which may leave the
# machine by accident. A save replaces these files and removes those of an earlier save it did not write.
PUBLISHED = [
    *PROMPT_FILES,
    PROMPT_INDEX,
    CLASS_VECTORS_FILE,
    "preprocessor_config.json",
    "README.md",
    "results.json",
    PROMPT_PICTURE,
    CURVES_PICTURE,
    "samples_*.png",
]


def _staging(folder: Path) -> Path:
    return folder.parent / f".{folder.name}.kiop-staging"


@contextmanager
def staged_save(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield a folder to write the new prompt's files into; on leaving the block they replace their namesakes in
    ``folder`` (other files there, such as checkpoints, stay). A README already in ``folder`` is copied into the
    staging folder first, so the card writer can tell a person's README from a generated one."""
    folder = Path(folder)
    finish_interrupted_save(folder)
    staging = _staging(folder)
    if staging.exists():  # left by a save killed while staging: the old prompt is intact
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    if (folder / "README.md").is_file():
        shutil.copy2(folder / "README.md", staging / "README.md")
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    folder.mkdir(parents=True, exist_ok=True)
    written = {folder / path.name for path in staging.iterdir()}
    earlier_prompts = indexed_prompts(folder)
    (folder / JOURNAL).touch()
    _commit(folder, staging)
    for stale in {path for pattern in PUBLISHED for path in folder.glob(pattern)} - written:  # an earlier save's
        stale.unlink()
    for name in set(earlier_prompts) - set(indexed_prompts(folder)):  # prompts the earlier save had, this one not
        shutil.rmtree(folder / name, ignore_errors=True)


def indexed_prompts(folder: str | os.PathLike) -> list[str]:
    """The prompts a saved folder holds in subfolders (besides the one at its top), from its index."""
    path = Path(folder) / PROMPT_INDEX
    if not path.is_file():
        return []
    return [name for name in json.loads(path.read_text())["prompts"][1:] if PROMPT_NAME.fullmatch(name)]


def finish_interrupted_save(folder: str | os.PathLike) -> None:
    """Complete a save of ``folder`` that was killed while its files were being moved into place."""
    folder = Path(folder)
    if not (folder / JOURNAL).exists():
        return
    staging = _staging(folder)
    if staging.is_dir():
        _commit(folder, staging)
    else:  # every file had been moved; only the journal was left
        (folder / JOURNAL).unlink()


def _commit(folder: Path, staging: Path) -> None:
    for path in sorted(staging.iterdir(), key=lambda p: p.name == CONFIG_NAME):  # config.json last
        if path.is_dir() and (folder / path.name).is_dir():  # a prompt's subfolder replaces the old one whole
            shutil.rmtree(folder / path.name)  # killed here, the next commit removes the rest and moves it in
        os.replace(path, folder / path.name)
    staging.rmdir()
    (folder / JOURNAL).unlink()
