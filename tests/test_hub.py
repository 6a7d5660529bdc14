"""Prompts on the Hub, end to end: the real huggingface_hub client against the loopback Hub server."""

import json
import runpy
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard, constants
from PIL import Image

from kiop_hf import KiOPModel, KiOPVisualPrompt, load_classifier
from kiop_hf.cli import main as cli
from kiop_hf.train_job import finish_run
from kiop_hf.trainer import KiOPTrainer
from kiop_hf.training_args import KiOPTrainingArguments

from .helpers import RGB_MEAN, RGB_STD, TINY_TRAINING, TinyCNN

EXAMPLE = Path(__file__).parents[1] / "examples" / "classify_with_prompt.py"


def push_transformers_target(repo_id, seed=0, image_size=32):
    from transformers import ResNetConfig, ResNetForImageClassification, ViTImageProcessor

    torch.manual_seed(seed)
    names = [f"letter_{i}" for i in range(12)]
    config = ResNetConfig(
        embedding_size=8,
        hidden_sizes=[8, 16],
        depths=[1, 1],
        layer_type="basic",
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
    )
    commit = ResNetForImageClassification(config).eval().push_to_hub(repo_id)
    size = {"height": image_size, "width": image_size}
    ViTImageProcessor(size=size, image_mean=RGB_MEAN, image_std=RGB_STD).push_to_hub(repo_id)
    return commit


def push_timm_target(repo_id, seed=0):
    import timm
    from timm.models import push_to_hf_hub

    torch.manual_seed(seed)
    model = timm.create_model("test_resnet", num_classes=12, in_chans=3).eval()
    model.pretrained_cfg = model.pretrained_cfg | {
        "input_size": (3, 32, 32),
        "mean": tuple(RGB_MEAN),
        "std": tuple(RGB_STD),
    }
    push_to_hf_hub(
        model, repo_id, safe_serialization=True, model_config={"label_names": [f"letter_{i}" for i in range(12)]}
    )


PUSH_TARGET = {"transformers": push_transformers_target, "timm": push_timm_target}


def trained_looking_prompt(target, source, seed=1):
    """A prompt with non-trivial rings (as after training), so a lossy round trip could not pass."""
    model = KiOPModel.from_models(target, {"gray": source}, image_size=32, ring_sizes=[36, 40])
    torch.manual_seed(seed)
    with torch.no_grad():
        for ring in model.prompt.rings:
            ring.normal_()
    return model


def forget_downloads():
    """A fresh cache: everything after this is downloaded again from the server."""
    shutil.rmtree(constants.HF_HUB_CACHE, ignore_errors=True)


@pytest.mark.parametrize("library", ["transformers", "timm"])
def test_hub_options_of_from_pretrained_reach_the_target_too(library, hub, gray_source, tmp_path):
    PUSH_TARGET[library]("user/letters-classifier")
    model = trained_looking_prompt(load_classifier("user/letters-classifier"), gray_source)
    model.push_to_hub("user/gray-on-letters")
    forget_downloads()
    cache = tmp_path / "cache"
    reloaded = KiOPModel.from_pretrained("user/gray-on-letters", cache_dir=cache)
    assert {p.name for p in cache.iterdir()} >= {"models--user--gray-on-letters", "models--user--letters-classifier"}
    assert not Path(constants.HF_HUB_CACHE).exists()  # nothing went to the default cache
    offline = KiOPModel.from_pretrained("user/gray-on-letters", cache_dir=cache, local_files_only=True)
    images = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(offline(images, task="gray"), reloaded(images, task="gray"))


@pytest.mark.parametrize("library", ["transformers", "timm"])
def test_push_a_prompt_then_reload_prompt_and_target_by_repo_id(library, hub, gray_source):
    PUSH_TARGET[library]("user/letters-classifier")
    target = load_classifier("user/letters-classifier")
    assert target.library == library and len(target.revision) == 40  # the commit it was loaded at is recorded
    model = trained_looking_prompt(target, gray_source)
    commit = model.push_to_hub("user/gray-on-letters")
    assert "user/gray-on-letters" in commit.commit_url

    forget_downloads()
    reloaded = KiOPModel.from_pretrained("user/gray-on-letters")
    assert reloaded.target.library == library and reloaded.target.revision == target.revision
    images = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        for task in (None, "gray"):
            assert torch.equal(reloaded(images, task=task), model(images, task=task))
    assert reloaded.class_names("gray") == [f"class_{i}" for i in range(10)]

    files = set(hub.api.list_repo_files("user/gray-on-letters"))
    assert files == {"config.json", "model.safetensors", "preprocessor_config.json", "README.md", "prompt.png"}
    card = ModelCard.load("user/gray-on-letters")
    assert card.data.library_name == "kiop_hf"
    assert card.data.base_model == "user/letters-classifier" and card.data.base_model_relation == "adapter"
    assert card.data.pipeline_tag == "image-classification" and card.data.license == "apache-2.0"
    assert 'KiOPModel.from_pretrained("user/gray-on-letters")' in card.text
    assert "auto_map" not in json.loads(
        Path(hub.api.hf_hub_download("user/gray-on-letters", "config.json")).read_text()
    )


def test_auto_model_finds_the_prompt_class(hub, gray_source):
    from transformers import AutoModel

    push_transformers_target("user/letters-classifier")
    model = trained_looking_prompt(load_classifier("user/letters-classifier"), gray_source)
    model.push_to_hub("user/auto-prompt")
    forget_downloads()
    prompt = AutoModel.from_pretrained("user/auto-prompt")
    assert isinstance(prompt, KiOPVisualPrompt)
    assert all(torch.equal(a, b) for a, b in zip(prompt.rings, model.prompt.rings))


def test_a_revision_pin_on_the_prompt_pins_its_target(hub, gray_source):
    push_transformers_target("user/letters-classifier", seed=0)
    first_target = load_classifier("user/letters-classifier")
    source = gray_source
    first = trained_looking_prompt(first_target, source, seed=1).push_to_hub("user/pinned").oid
    push_transformers_target("user/letters-classifier", seed=5)  # the target moves on...
    second_target = load_classifier("user/letters-classifier")
    trained_looking_prompt(second_target, source, seed=2).push_to_hub("user/pinned")  # ...and so does the prompt

    forget_downloads()
    old, new = KiOPModel.from_pretrained("user/pinned", revision=first), KiOPModel.from_pretrained("user/pinned")
    assert old.target.revision == first_target.revision != new.target.revision == second_target.revision
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(old.target(images), first_target(images))
        assert torch.equal(new.target(images), second_target(images))
        assert not torch.equal(old(images, task="gray"), new(images, task="gray"))


def test_trainer_pushes_the_run_with_a_full_card_and_no_checkpoints(hub, gray_source, tmp_path):
    from .test_cli import labelled_dataset

    push_timm_target("user/letters-classifier")
    target, source = load_classifier("user/letters-classifier"), gray_source
    model = KiOPModel.from_models(target, {"gray": source}, image_size=32, ring_sizes=[36, 40])
    eval_sets = {
        "gray": labelled_dataset(tmp_path / "gray", 10, "L"),
        "target": labelled_dataset(tmp_path / "rgb", 12, "RGB"),
    }
    args = KiOPTrainingArguments(
        output_dir=str(tmp_path / "run"),
        push_to_hub=True,
        hub_model_id="user/trained-prompt",
        **(TINY_TRAINING | dict(rounds=2)),
    )
    trainer = KiOPTrainer(model, {"gray": source}, args, eval_sets=eval_sets)
    trainer.train()
    finish_run(trainer)

    files = set(hub.api.list_repo_files("user/trained-prompt"))
    pictures = {"prompt.png", "samples_gray.png", "training_curves.png"}
    assert (
        files
        == {"config.json", "model.safetensors", "preprocessor_config.json", "README.md", "results.json"} | pictures
    )
    card = ModelCard.load("user/trained-prompt")
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    evaluated = {(r.dataset_name, r.metric_name): r for r in card.data.eval_results}
    assert evaluated[("gray", "accuracy (gray)")].metric_value == round(results["gray"], 4)  # the dataset's name
    assert evaluated[("rgb", "accuracy (target)")].metric_value == round(results["target"], 4)
    assert {r.dataset_split for r in card.data.eval_results} == {"test"} and len(evaluated) == 2
    assert "target/unprompted" in card.text  # the base model's own accuracy: in the body, not in model-index
    assert card.data.base_model == "user/letters-classifier" and "data-free" in card.data.tags
    for picture in pictures:
        assert f"]({picture})" in card.text
        assert Image.open(hub.api.hf_hub_download("user/trained-prompt", picture)).size[0] > 32
    assert "synthetic (each source inverted; data-free)" in card.text and "## Framework versions" in card.text

    forget_downloads()
    reloaded = KiOPModel.from_pretrained("user/trained-prompt")
    images = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(reloaded(images, task="gray"), model(images, task="gray"))


def test_example_and_cli_push_classify_with_a_published_prompt(hub, gray_source, tmp_path, capsys):
    push_transformers_target("user/letters-classifier")
    model = trained_looking_prompt(load_classifier("user/letters-classifier"), gray_source)
    model.save_pretrained(tmp_path / "prompt")
    for stray in (".env", "data/private.csv", "notes.txt", "checkpoints/checkpoint_0/run_state_0.json", "data/x.png"):
        (tmp_path / "prompt" / stray).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "prompt" / stray).write_text("secret")
    cli(["push", str(tmp_path / "prompt"), "user/cli-prompt"])
    assert "pushed" in capsys.readouterr().out
    # an allow-list: the prompt, its card and picture, nothing else the folder holds
    assert set(hub.api.list_repo_files("user/cli-prompt")) == {
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "README.md",
        "prompt.png",
    }

    paths = []
    for i in range(3):
        paths.append(tmp_path / f"image_{i}.png")
        Image.fromarray((torch.rand(32, 32) * 255).byte().numpy(), "L").save(paths[-1])
    forget_downloads()
    example = runpy.run_path(str(EXAMPLE))
    predicted = example["main"](["user/cli-prompt", "--task", "gray", *map(str, paths)])
    printed = capsys.readouterr().out
    with torch.no_grad():
        images = torch.stack([torch.from_numpy(np.array(Image.open(p))) for p in paths])[:, None]
        expected = model(images.float() / 255, task="gray").argmax(-1)
    assert predicted == [f"class_{int(i)}" for i in expected]
    assert all(f"image_{i}.png: {name}" in printed for i, name in enumerate(predicted))


def test_bad_prompt_repos_give_clear_errors(hub, gray_source, tmp_path):
    push_transformers_target("user/letters-classifier")
    target = load_classifier("user/letters-classifier")
    model = trained_looking_prompt(target, gray_source)

    with pytest.raises(OSError, match="no prompt repo 'user/missing'"):
        KiOPModel.from_pretrained("user/missing")
    with pytest.raises(ValueError, match="is not a kiop_hf prompt: its config.json has model_type 'resnet'"):
        KiOPModel.from_pretrained("user/letters-classifier")

    model.save_pretrained(tmp_path / "prompt")
    hub.api.create_repo("user/no-weights")
    hub.api.upload_file(
        path_or_fileobj=tmp_path / "prompt" / "config.json", path_in_repo="config.json", repo_id="user/no-weights"
    )
    with pytest.raises(OSError, match="has no model.safetensors"):
        KiOPModel.from_pretrained("user/no-weights")

    config = json.loads((tmp_path / "prompt" / "config.json").read_text())
    config["ring_sizes"] = [36, 44]  # the weights on the Hub no longer fit the geometry
    hub.api.create_repo("user/corrupt")
    hub.api.upload_folder(folder_path=tmp_path / "prompt", repo_id="user/corrupt")
    hub.api.upload_file(
        path_or_fileobj=json.dumps(config).encode(), path_in_repo="config.json", repo_id="user/corrupt"
    )
    with pytest.raises(ValueError, match="model.safetensors does not match its config.json"):
        KiOPModel.from_pretrained("user/corrupt")

    model.push_to_hub("user/good")
    push_transformers_target("user/letters-48", image_size=48)
    with pytest.raises(ValueError, match="made for a target with 32px inputs, but user/letters-48 takes 48px"):
        KiOPModel.from_pretrained("user/good", target="user/letters-48")
    wrong_classes = load_classifier(
        TinyCNN(num_classes=7), image_size=32, mean=RGB_MEAN, std=RGB_STD, class_names=[str(i) for i in range(7)]
    )
    with pytest.raises(ValueError, match="made for a target with 12 classes"):
        KiOPModel.from_pretrained("user/good", target=wrong_classes)


def test_a_hub_dataset_of_unlabelled_images_is_a_transfer_set_and_is_named_in_the_card(hub, timm_folder, tmp_path):
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as ImageFeature

    generator = np.random.default_rng(0)
    images = [Image.fromarray(generator.integers(0, 256, (28, 28), dtype=np.uint8), "L") for _ in range(12)]
    features = Features({"image": ImageFeature(), "label": ClassLabel(num_classes=10)})  # labels withheld below
    Dataset.from_dict({"image": images, "label": [0] * 12}, features=features).push_to_hub("user/unlabelled-gray")
    push_transformers_target("user/letters-classifier")
    target, source = load_classifier("user/letters-classifier"), load_classifier(timm_folder)
    model = KiOPModel.from_models(target, {"gray": source}, image_size=32, ring_sizes=[36, 40])
    args = KiOPTrainingArguments(output_dir=str(tmp_path), transfer_data="unlabelled", **TINY_TRAINING)
    trainer = KiOPTrainer(model, {"gray": source}, args, transfer_images="user/unlabelled-gray")
    trainer.train()
    finish_run(trainer)
    (bank,) = trainer.source_banks["gray"]
    assert bank.images.shape == (12, 1, 32, 32)  # resized from 28px to the source's 32px
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.datasets == ["user/unlabelled-gray"]
    assert "data-free" not in card.data.tags and "real unlabelled images" in card.text


def test_a_pushed_folder_names_its_repo_and_leaves_no_stale_files(hub, gray_source, tmp_path, capsys):
    from kiop_hf.cli import main as cli

    push_transformers_target("user/letters-classifier")
    model = trained_looking_prompt(load_classifier("user/letters-classifier"), gray_source)
    folder = tmp_path / "local-name"
    model.save_pretrained(folder)
    (folder / "samples_old.png").write_bytes((folder / "prompt.png").read_bytes())  # as an earlier run left it
    cli(["push", str(folder), "user/published-name"])
    assert "samples_old.png" in hub.api.list_repo_files("user/published-name")
    card = ModelCard.load("user/published-name")
    assert 'KiOPModel.from_pretrained("user/published-name")' in card.text and "local-name" not in card.text
    assert 'from_pretrained("local-name")' in (folder / "README.md").read_text()  # the folder itself is untouched
    (folder / "samples_old.png").unlink()
    cli(["push", str(folder), "user/published-name"])
    assert "samples_old.png" not in hub.api.list_repo_files("user/published-name")


def test_two_tasks_evaluated_on_one_dataset_stay_two_model_index_entries(prompted_card_model, tmp_path):
    from kiop_hf.model_card import write_model_card

    write_model_card(
        prompted_card_model,
        tmp_path,
        results={"gray": 0.5, "target": 0.9, "target/unprompted": 0.95},
        eval_sets={"gray": "user/letters", "target": "user/letters"},
    )
    entries = ModelCard.load(tmp_path / "README.md").data.eval_results
    assert [(e.task_name, e.dataset_name, e.metric_value) for e in entries] == [
        ("gray", "user/letters", 0.5),
        ("target (target's own task)", "user/letters", 0.9),
    ]


@pytest.fixture
def prompted_card_model(transformers_folder, timm_folder):
    return KiOPModel.from_models(
        load_classifier(transformers_folder),
        {"gray": load_classifier(timm_folder)},
        image_size=32,
        ring_sizes=[36, 40],
    )


def test_a_prompt_naming_local_models_is_published_only_under_their_hub_ids(
    hub, transformers_folder, timm_folder, tmp_path, capsys
):
    model = trained_looking_prompt(load_classifier(transformers_folder), load_classifier(timm_folder))
    model.save_pretrained(tmp_path / "prompt")
    with pytest.raises(SystemExit, match="--target_repo USER/TARGET --source_repo gray=USER/SOURCE") as refused:
        cli(["push", str(tmp_path / "prompt"), "user/local-prompt"])
    assert "\n" not in str(refused.value) and "names the target as" in str(refused.value)
    with pytest.raises(ValueError, match="names the target as"):
        model.push_to_hub("user/local-prompt")
    assert not hub.api.repo_exists("user/local-prompt")  # refused before the repo was created
    with pytest.raises(ValueError, match="a model the prompt is to name is not on the Hub"):
        model.push_to_hub("user/local-prompt", target_repo="user/unpublished", source_repos={"gray": "user/nope"})

    hub.api.create_repo("user/letters-rgb", exist_ok=True)
    target_commit = hub.api.upload_folder(folder_path=transformers_folder, repo_id="user/letters-rgb").oid
    hub.api.create_repo("user/gray-source", exist_ok=True)
    hub.api.upload_folder(folder_path=timm_folder, repo_id="user/gray-source")
    flags = ["--target_repo", "user/letters-rgb", "--source_repo", "gray=user/gray-source", "--revision", "v1"]
    cli(["push", str(tmp_path / "prompt"), "user/local-prompt", *flags])
    assert "(tag v1)" in capsys.readouterr().out
    published = Path(hub.api.hf_hub_download("user/local-prompt", "config.json", revision="v1"))
    published = json.loads(published.read_text())
    assert (published["target_name_or_path"], published["target_revision"]) == ("user/letters-rgb", target_commit)
    assert published["sources"][0]["name_or_path"] == "user/gray-source"
    card = ModelCard.load("user/local-prompt")
    assert card.data.base_model == "user/letters-rgb" and card.data.source_models == ["user/gray-source"]
    local = json.loads((tmp_path / "prompt" / "config.json").read_text())
    assert local["target_name_or_path"] == str(transformers_folder)  # the folder still serves its local target

    forget_downloads()
    reloaded = KiOPModel.from_pretrained("user/local-prompt", revision="v1")
    assert reloaded.target.name_or_path == "user/letters-rgb" and reloaded.target.revision == target_commit
    images = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(reloaded(images, task="gray"), model(images, task="gray"))
    with pytest.raises(SystemExit, match="already has a revision 'v1'"):
        cli(["push", str(tmp_path / "prompt"), "user/local-prompt", *flags])


def test_a_run_to_be_pushed_with_a_local_target_is_refused_before_training(transformers_folder, gray_source, tmp_path):
    model = KiOPModel.from_models(
        load_classifier(transformers_folder), {"gray": gray_source}, image_size=32, ring_sizes=[36, 40]
    )
    args = KiOPTrainingArguments(output_dir=str(tmp_path), push_to_hub=True, **TINY_TRAINING)
    with pytest.raises(ValueError, match="push_to_hub: the prompt names the target as .*--target_repo"):
        KiOPTrainer(model, {"gray": gray_source}, args)
