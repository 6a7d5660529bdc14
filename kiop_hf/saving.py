"""Saving a prompt over an existing one so that a kill at any instant leaves the old prompt or the new one.

The new files are written into a staging folder beside the destination; only once they are all complete does a
journal file mark the destination as being committed, and the files are moved into place (``config.json`` last).
A save killed while staging leaves the old prompt untouched (the staging folder is removed by the next save); one
killed while committing is completed by the next save or load of that folder, from the complete staging folder.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from transformers.utils import CONFIG_NAME

from .clip import CLASS_VECTORS_FILE
from .model_card import CURVES_PICTURE, PROMPT_PICTURE

JOURNAL = ".kiop-committing"
PROMPT_FILES = ("config.json", "model.safetensors")
# What a prompt folder consists of, and all that publishing it uploads: a training folder also holds checkpoints
# and tracker logs, and a user's folder may hold anything (a .env, private data), none of which may leave the
# machine by accident. A save replaces these files and removes those of an earlier save it did not write.
PUBLISHED = [
    *PROMPT_FILES,
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
    (folder / JOURNAL).touch()
    _commit(folder, staging)
    for stale in {path for pattern in PUBLISHED for path in folder.glob(pattern)} - written:  # an earlier save's
        stale.unlink()


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
        os.replace(path, folder / path.name)
    staging.rmdir()
    (folder / JOURNAL).unlink()
