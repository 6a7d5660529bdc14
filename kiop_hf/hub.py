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
from .configuration_kiop import TARGET_TASK, KiOPPromptConfig, check_config_object
from .model_card import card_for_repo, hub_id
from .saving import PROMPT_FILES, PROMPT_INDEX, PUBLISHED, finish_interrupted_save, indexed_prompts


def create_prompt_repo(repo_id: str, *, private: bool | None = None, token: str | None = None) -> str:
    """Create ``repo_id`` if needed and return it as ``namespace/name`` (a bare name goes to the logged-in user), so
    a card can name the repo it will be loaded from."""
    return HfApi(token=token).create_repo(repo_id, private=private, exist_ok=True).repo_id


def local_models(config: dict) -> dict[str, str]:
    """The models a prompt's config names by a local path (``"target"``, or a source's name): another machine
    could not load the target, nor find the sources, so a published prompt must name them by Hub id."""
    named = {TARGET_TASK: config.get("target_name_or_path")}
    named |= {source["name"]: source.get("name_or_path") for source in config.get("sources") or []}
    return {who: name for who, name in named.items() if name and hub_id(name) is None}


def check_publishable(config: dict, where: str, renamed: set[str] = frozenset()) -> None:
    """Refuse, before anything is uploaded or trained, a prompt that names its target or a source by a local path
    (other than those being renamed), saying how to name the Hub id instead."""
    local = {who: name for who, name in local_models(config).items() if who not in renamed}
    if not local:
        return
    role = lambda who: "the target" if who == TARGET_TASK else f"the source {who!r}"  # noqa: E731
    named = ", ".join(f"{role(who)} as {name!r}" for who, name in local.items())
    flags = " ".join(
        "--target_repo USER/TARGET" if who == TARGET_TASK else f"--source_repo {who}=USER/SOURCE" for who in local
    )
    raise ValueError(
        f"{where} names {named}: a local path, which no other machine can load. Publish the model on the Hub and "
        f"name it there: kiop-hf push FOLDER REPO {flags} (push_to_hub(..., target_repo=, source_repos=)), or "
        "load the model by its Hub id before training (--target / --source)"
    )


def renamed_config(config: dict, target_repo: str | None, source_repos: dict[str, str], api: HfApi) -> dict:
    """``config`` naming the target and sources by the given Hub ids (the target pinned at its current commit),
    as published; each id must exist on the Hub."""
    config = json.loads(json.dumps(config))
    sources = {source["name"]: source for source in config.get("sources") or []}
    unknown = sorted(set(source_repos) - set(sources))
    if unknown:
        raise ValueError(f"source_repos names {unknown}, which the prompt has not; its sources are {sorted(sources)}")
    for repo in [target_repo, *source_repos.values()]:
        if repo is not None and hub_id(repo) is None:
            raise ValueError(f"{repo!r} is not a Hub repo id (expected namespace/name)")
    try:
        if target_repo is not None:
            config["target_name_or_path"], config["target_revision"] = target_repo, api.model_info(target_repo).sha
        for name, repo in source_repos.items():
            sources[name]["name_or_path"], sources[name]["revision"] = repo, api.model_info(repo).sha
    except (RepositoryNotFoundError, RevisionNotFoundError) as error:
        raise ValueError(f"a model the prompt is to name is not on the Hub: {error}") from error
    return config


def publish(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
    tag: str | None = None,
    create_pr: bool = False,
    commit_message: str = "Upload KiOP prompt",
    target_repo: str | None = None,
    source_repos: dict[str, str] | None = None,
) -> CommitInfo:
    """The one way a prompt folder reaches the Hub (every ``push_to_hub`` and ``kiop-hf push`` end here).

    Creates ``repo_id`` if needed and uploads only the files ``PUBLISHED`` names (prompt, class vectors, card and
    its pictures, results), for the top prompt and the prompts in its subfolders, to the branch ``revision``;
    ``tag`` tags the new commit (refused up front if the repo has it). A prompt that names its target or a source
    by a local path is refused, unless ``target_repo`` / ``source_repos`` name their Hub ids: the published
    config then names those (the folder itself is left as it is).
    """
    folder, source_repos = Path(folder), dict(source_repos or {})
    finish_interrupted_save(folder)  # never publish half of a save that was killed while moving its files in
    missing = [name for name in PROMPT_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} is not a saved prompt: it lacks {missing} (save it with save_pretrained)")
    subfolders = indexed_prompts(folder)  # the other prompts of a folder that holds several
    configs = {prefix: json.loads((folder / prefix / "config.json").read_text()) for prefix in ["", *subfolders]}
    renamed = ({TARGET_TASK} if target_repo else set()) | set(source_repos)
    for prefix, config in configs.items():
        check_publishable(config, f"the prompt in {folder / prefix}", renamed)
        if config.get("target_library") == "clip" and not (folder / prefix / CLASS_VECTORS_FILE).is_file():
            raise FileNotFoundError(
                f"{folder / prefix} lacks {CLASS_VECTORS_FILE}, which its CLIP target needs: save the prompt with its "
                "target (KiOPModel.save_pretrained / push_to_hub) so the class vectors are stored"
            )
    api = HfApi(token=token)
    if renamed:
        configs = {prefix: renamed_config(c, target_repo, source_repos, api) for prefix, c in configs.items()}
    repo_id = create_prompt_repo(repo_id, private=private, token=token)
    if tag is not None and _has_revision(api, repo_id, tag):
        raise ValueError(f"{repo_id} already has a revision {tag!r}; a tag names one commit for good, pick a new one")
    if revision not in (None, "main"):
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    allowed = [*PUBLISHED, *(f"{name}/{pattern}" for name in subfolders for pattern in PUBLISHED)]
    with tempfile.TemporaryDirectory() as staging:  # the published files, the card naming this repo
        for prefix in ["", *subfolders]:
            (Path(staging) / prefix).mkdir(exist_ok=True)
            for pattern in PUBLISHED:
                for path in (folder / prefix).glob(pattern):
                    shutil.copy2(path, Path(staging) / prefix / path.name)
            if renamed:
                (Path(staging) / prefix / "config.json").write_text(json.dumps(configs[prefix], indent=2) + "\n")
        if (folder / "README.md").is_file():
            card = card_for_repo(folder / "README.md", repo_id, KiOPPromptConfig.from_dict(configs[""]))
            (Path(staging) / "README.md").write_text(card)
        stale = _stale_files(api, repo_id, revision, Path(staging), subfolders)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=staging,
            commit_message=commit_message,
            revision=revision,
            create_pr=create_pr,
            allow_patterns=allowed,
            delete_patterns=stale or None,
        )
    if tag is not None:
        api.create_tag(repo_id, tag=tag, revision=commit.oid)
    return commit


def _has_revision(api: HfApi, repo_id: str, revision: str) -> bool:
    try:
        api.model_info(repo_id, revision=revision)
    except RevisionNotFoundError:
        return False
    return True


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


def push_saved(model, repo_id: str, *, private: bool | None = None, **kwargs) -> CommitInfo:
    """Save ``model`` (a prompt, or a prompt with its target) with a card naming ``repo_id`` and ``publish`` it."""
    renamed = ({TARGET_TASK} if kwargs.get("target_repo") else set()) | set(kwargs.get("source_repos") or {})
    check_publishable(model.config.to_dict(), "the prompt", renamed)  # before the repo is created
    repo_id = create_prompt_repo(repo_id, private=private, token=kwargs.get("token"))
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder, repo_id=repo_id)
        return publish(folder, repo_id, **kwargs)


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
