"""The loopback Hub works end to end with the real huggingface_hub, timm, transformers and datasets clients."""

import hashlib
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants, hf_hub_download, snapshot_download
from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError


def downloaded(filename: str) -> bool:
    """Whether the per-test cache holds `filename`, so it was downloaded from the loopback server."""
    return any(Path(constants.HF_HUB_CACHE).rglob(filename))


def test_upload_folder_then_download_by_branch_and_commit(hub, tmp_path):
    folder = tmp_path / "upload"
    (folder / "weights").mkdir(parents=True)
    (folder / "notes.txt").write_text("first\n")
    weights = bytes(range(256)) * 16
    (folder / "weights" / "model.safetensors").write_bytes(weights)

    repo_id = hub.api.create_repo("user/roundtrip").repo_id
    assert repo_id == "user/roundtrip"
    assert hub.api.create_repo(repo_id, exist_ok=True).repo_id == repo_id
    first = hub.api.upload_folder(repo_id=repo_id, folder_path=folder)
    second = hub.api.upload_file(path_or_fileobj=b"second\n", path_in_repo="notes.txt", repo_id=repo_id)

    sha256 = hashlib.sha256(weights).hexdigest()
    assert hub.server.lfs_objects[sha256] == weights  # the .safetensors file went through the LFS upload
    [info] = hub.api.get_paths_info(repo_id, ["weights/model.safetensors"])
    assert info.lfs.sha256 == sha256 and info.size == len(weights)
    assert sorted(hub.api.list_repo_files(repo_id)) == ["notes.txt", "weights/model.safetensors"]
    assert hub.api.model_info(repo_id).sha == second.oid
    assert hub.api.model_info(repo_id, revision=first.oid).sha == first.oid

    assert Path(hf_hub_download(repo_id, "notes.txt", revision="main")).read_text() == "second\n"
    assert downloaded("notes.txt")
    assert Path(hf_hub_download(repo_id, "notes.txt", revision=first.oid)).read_text() == "first\n"

    snapshot = Path(snapshot_download(repo_id, cache_dir=tmp_path / "fresh_cache"))
    assert snapshot.name == second.oid
    assert (snapshot / "weights" / "model.safetensors").read_bytes() == weights
    assert (snapshot / "notes.txt").read_text() == "second\n"


def test_branches_tags_and_dataset_repos(hub):
    repo_id = hub.api.create_repo("user/table", repo_type="dataset").repo_id
    first = hub.api.upload_file(
        path_or_fileobj=b"x,y\n1,2\n", path_in_repo="data.csv", repo_id=repo_id, repo_type="dataset"
    )
    hub.api.create_tag(repo_id, tag="v1", repo_type="dataset")
    hub.api.create_branch(repo_id, branch="dev", repo_type="dataset")
    hub.api.upload_file(
        path_or_fileobj=b"x,y\n3,4\n", path_in_repo="data.csv", repo_id=repo_id, repo_type="dataset", revision="dev"
    )

    def read(revision):
        return Path(hf_hub_download(repo_id, "data.csv", repo_type="dataset", revision=revision)).read_bytes()

    assert read("main") == read("v1") == read(first.oid) == b"x,y\n1,2\n"
    assert read("dev") == b"x,y\n3,4\n"
    hub.api.delete_file("data.csv", repo_id, repo_type="dataset", revision="dev")
    assert hub.api.list_repo_files(repo_id, repo_type="dataset", revision="dev") == []
    assert hub.api.list_repo_files(repo_id, repo_type="dataset") == ["data.csv"]
    with pytest.raises(RepositoryNotFoundError):
        hub.api.model_info(repo_id)  # a dataset repo is not a model repo


def test_timm_push_to_hub_then_create_model_from_hub(hub):
    import timm
    from timm.models import push_to_hf_hub

    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=10, in_chans=1).eval()
    push_to_hf_hub(model, "user/timm-gray", safe_serialization=True)

    loaded = timm.create_model("hf-hub:user/timm-gray", pretrained=True).eval()
    images = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images), rtol=0, atol=0)
    assert downloaded("model.safetensors")


def test_transformers_push_to_hub_then_from_pretrained(hub):
    from transformers import (
        AutoImageProcessor,
        AutoModelForImageClassification,
        ResNetConfig,
        ResNetForImageClassification,
        ViTImageProcessor,
    )

    torch.manual_seed(0)
    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", num_labels=3)
    model = ResNetForImageClassification(config).eval()
    model.push_to_hub("user/resnet-rgb")
    ViTImageProcessor(size={"height": 32, "width": 32}).push_to_hub("user/resnet-rgb")

    loaded = AutoModelForImageClassification.from_pretrained("user/resnet-rgb").eval()
    processor = AutoImageProcessor.from_pretrained("user/resnet-rgb")
    pixels = processor(images=torch.rand(3, 40, 40), return_tensors="pt").pixel_values
    assert pixels.shape == (1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels).logits, model(pixels).logits, rtol=0, atol=0)
    assert downloaded("model.safetensors")


def test_datasets_push_to_hub_then_load_dataset(hub):
    import datasets

    table = {"x": [1, 2, 3], "label": ["a", "b", "c"]}
    datasets.Dataset.from_dict(table).push_to_hub("user/letters")
    assert datasets.load_dataset("user/letters", split="train").to_dict() == table


def test_missing_repo_file_and_revision_raise_the_hub_errors(hub):
    repo_id = hub.api.create_repo("user/errors").repo_id
    hub.api.upload_file(path_or_fileobj=b"present", path_in_repo="present.txt", repo_id=repo_id)

    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("user/missing", "present.txt")
    with pytest.raises(RepositoryNotFoundError):
        hub.api.model_info("user/missing")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo_id, "absent.txt")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo_id, "present.txt", revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        hub.api.model_info(repo_id, revision="0" * 40)
    assert hub.api.file_exists(repo_id, "present.txt") and not hub.api.file_exists(repo_id, "absent.txt")
