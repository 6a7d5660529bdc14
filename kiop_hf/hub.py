"""Publishing and fetching prompts on the Hugging Face Hub (or any Hub-compatible endpoint)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from fnmatch import fnmatch
from pathlib import Path

from huggingface_hub import CommitInfo, HfApi, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from .clip import CLASS_VECTORS_FILE
from .configuration_kiop import KiOPPromptConfig, check_config_object
from .model_card import card_for_repo
from .saving import PROMPT_FILES, PROMPT_INDEX, PUBLISHED, finish_interrupted_save, indexed_prompts


def create_prompt_repo(repo_id: str, *, private: bool | None = None, token: str | None = None) -> str:
    """Create ``repo_id`` if needed and return it as ``namespace/name`` (a bare name goes to the logged-in user), so
    a card can name the repo it will be loaded from."""
    return HfApi(token=token).create_repo(repo_id, private=private, exist_ok=True).repo_id


def upload_prompt_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    commit_message: str = "Upload KiOP prompt",
    token: str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
) -> CommitInfo:
    """Upload a saved prompt folder to the existing ``repo_id``: only the files ``PUBLISHED`` names (prompt, class
    vectors, card and its pictures, results) at the folder's top level."""
    folder = Path(folder)
    finish_interrupted_save(folder)  # never publish half of a save that was killed while moving its files in
    missing = [name for name in PROMPT_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} is not a saved prompt: it lacks {missing} (save it with save_pretrained)")
    config = json.loads((folder / "config.json").read_text())
    if config.get("target_library") == "clip" and not (folder / CLASS_VECTORS_FILE).is_file():
        raise FileNotFoundError(
            f"{folder} lacks {CLASS_VECTORS_FILE}, which its CLIP target needs: save the prompt with its target "
            "(KiOPModel.save_pretrained / push_to_hub) so the class vectors are stored"
        )
    api = HfApi(token=token)
    if revision not in (None, "main"):
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    subfolders = indexed_prompts(folder)  # the other prompts of a folder that holds several
    allowed = [*PUBLISHED, *(f"{name}/{pattern}" for name in subfolders for pattern in PUBLISHED)]
    with tempfile.TemporaryDirectory() as staging:  # the published files, the card naming this repo
        for prefix in ["", *subfolders]:
            (Path(staging) / prefix).mkdir(exist_ok=True)
            for pattern in PUBLISHED:
                for path in (folder / prefix).glob(pattern):
                    shutil.copy2(path, Path(staging) / prefix / path.name)
        if (folder / "README.md").is_file():
            (Path(staging) / "README.md").write_text(card_for_repo(folder / "README.md", repo_id))
        stale = _stale_files(api, repo_id, revision, Path(staging), subfolders)
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=staging,
            commit_message=commit_message,
            revision=revision,
            create_pr=create_pr,
            allow_patterns=allowed,
            delete_patterns=stale or None,
        )


def _stale_files(api: HfApi, repo_id: str, revision: str | None, staging: Path, subfolders: list[str]) -> list[str]:
    """Files an earlier push made that this one does not have: generated names at the top and in the prompt
    subfolders this push or the repo's index names (a README on the Hub stays, whoever wrote it, and no other
    subfolder is touched)."""
    remote = api.list_repo_files(repo_id, revision=revision)
    earlier = read_prompt_index(repo_id, revision) if PROMPT_INDEX in remote else None
    prompt_folders = set(subfolders) | set((earlier or {}).get("prompts", [])[1:])
    generated = [pattern for pattern in PUBLISHED if pattern != "README.md"]
    stale = []
    for name in remote:
        folder, _, file = name.rpartition("/")
        patterns = PUBLISHED if folder and folder not in subfolders else generated  # a dropped prompt goes whole
        published = (not folder or folder in prompt_folders) and any(fnmatch(file, p) for p in patterns)
        if published and not (staging / name).exists():
            stale.append(name)
    return stale


def push_prompt_folder(
    folder: str | os.PathLike, repo_id: str, *, private: bool | None = None, **kwargs
) -> CommitInfo:
    """Create ``repo_id`` if needed and upload the saved prompt ``folder`` (``kiop-hf push``); keyword arguments
    as for ``upload_prompt_folder``."""
    repo_id = create_prompt_repo(repo_id, private=private, token=kwargs.get("token"))
    return upload_prompt_folder(folder, repo_id, **kwargs)


def push_saved(model, repo_id: str, *, private: bool | None = None, **kwargs) -> CommitInfo:
    """Save ``model`` (a prompt, or a prompt with its target) with a card for ``repo_id`` and upload it."""
    repo_id = create_prompt_repo(repo_id, private=private, token=kwargs.get("token"))
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder, repo_id=repo_id)
        return upload_prompt_folder(folder, repo_id, **kwargs)


def read_prompt_index(name_or_path: str | os.PathLike, revision: str | None = None, **hub_kwargs) -> dict | None:
    """A saved folder's or repo's ``prompts.json`` (which prompts it holds; the first at its top), or None for a
    folder of one prompt saved before there was an index."""
    name = os.fspath(name_or_path)
    if os.path.isdir(name):
        finish_interrupted_save(name)
        path = Path(name) / PROMPT_INDEX
        if not path.is_file():
            return None
    else:
        try:
            path = Path(hf_hub_download(name, PROMPT_INDEX, revision=revision, **hub_kwargs))
        except EntryNotFoundError:
            return None
    try:
        index = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise OSError(f"{name!r}: {PROMPT_INDEX} is not valid JSON ({error})") from error
    prompts = index.get("prompts") if isinstance(index, dict) else None
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"{name!r}: {PROMPT_INDEX} must name its prompts as a list of strings, got {index!r}")
    return index


def check_prompt_repo(
    name_or_path: str | os.PathLike, revision: str | None = None, subfolder: str | None = None, **hub_kwargs
) -> None:
    """Raise a clear error unless ``name_or_path`` (or its ``subfolder``) holds a kiop_hf prompt (config.json of
    model_type ``kiop_prompt`` and a safetensors weights file), before transformers tries to load anything."""
    name = os.fspath(name_or_path)
    if os.path.isdir(name):
        finish_interrupted_save(name)  # a save killed while moving its files in: complete it before reading
    files = {}
    for filename in PROMPT_FILES:
        if os.path.isdir(name):
            path = Path(name, subfolder or "", filename)
            files[filename] = path if path.is_file() else None
            continue
        try:
            files[filename] = Path(
                hf_hub_download(name, filename, subfolder=subfolder, revision=revision, **hub_kwargs)
            )
        except (RepositoryNotFoundError, RevisionNotFoundError) as error:
            raise OSError(f"no prompt repo {name!r} at revision {revision or 'main'!r} on the Hub: {error}") from error
        except LocalEntryNotFoundError as error:  # before EntryNotFoundError, its parent class
            raise OSError(f"could not reach the Hub for {name!r}, and its {filename} is not in the cache") from error
        except EntryNotFoundError:
            files[filename] = None
    missing = [filename for filename, path in files.items() if path is None]
    if missing:
        raise OSError(
            f"{name!r} is not a kiop_hf prompt: it has no {' or '.join(missing)} (a prompt is saved as config.json + "
            "model.safetensors with save_pretrained)"
        )
    try:
        config_dict = json.loads(files["config.json"].read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise OSError(f"{name!r}: config.json is not valid JSON ({error})") from error
    check_config_object(config_dict)
    model_type = config_dict.get("model_type")
    if model_type != KiOPPromptConfig.model_type:
        raise ValueError(
            f"{name!r} is not a kiop_hf prompt: its config.json has model_type {model_type!r}, expected "
            f"{KiOPPromptConfig.model_type!r}"
        )
