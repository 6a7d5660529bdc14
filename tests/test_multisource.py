"""Several sources in one prompt: nested rings, disjoint label maps, mixed architectures, frequency mapping."""

import pytest
import torch
from safetensors.torch import load_file

from kiop_hf import KiOPModel, load_classifier
from kiop_hf.label_mapping import frequency_label_maps
from kiop_hf.train_job import finish_run
from kiop_hf.trainer import KiOPTrainer
from kiop_hf.training_args import KiOPTrainingArguments

from .helpers import GRAY_MEAN, GRAY_STD, RGB_MEAN, RGB_STD, TINY_TRAINING, TinyCNN

TINY = TINY_TRAINING | dict(rounds=2, save_total_limit=None)


def module_classifier(in_channels, num_classes, image_size, mean, std, seed):
    torch.manual_seed(seed)
    return load_classifier(
        TinyCNN(in_channels, num_classes),
        image_size=image_size,
        mean=mean,
        std=std,
        class_names=[f"m{seed}_{i}" for i in range(num_classes)],
    )


@pytest.fixture
def three_sources(timm_folder, vit_folder):
    """A timm CNN (gray, 32px), a transformers ViT (RGB, 28px) and a plain module (RGB, 24px, own statistics)."""
    return {
        "timm_gray": load_classifier(timm_folder),
        "vit_rgb": load_classifier(vit_folder),
        "module_rgb": module_classifier(3, 8, 24, [0.2, 0.3, 0.4], [0.3, 0.3, 0.3], seed=7),
    }


def randomised(model, seed=0):
    torch.manual_seed(seed)
    with torch.no_grad():
        for ring in model.prompt.rings:
            ring.normal_()
    return model


def test_three_sources_nest_their_rings_and_read_disjoint_target_classes(three_sources):
    target = module_classifier(3, 40, 32, RGB_MEAN, RGB_STD, seed=1)
    model = randomised(KiOPModel.from_models(target, three_sources, image_size=32, ring_sizes=[36, 44, 52, 60]))
    config = model.config
    assert config.task_names == ["target", "timm_gray", "vit_rgb", "module_rgb"]
    assert [ring.shape[1] for ring in model.prompt.rings] == [
        36**2 - 32**2,
        44**2 - 36**2,
        52**2 - 44**2,
        60**2 - 52**2,
    ]

    x = torch.rand(2, 3, 32, 32)
    canvases = {task: model.prompt(x, task) for task in config.task_names}
    assert [canvases[t].shape[-1] for t in config.task_names] == [36, 44, 52, 60]
    for inner, outer in zip(config.task_names, config.task_names[1:]):  # each source adds one outer ring
        size, offset = canvases[inner].shape[-1], (canvases[outer].shape[-1] - canvases[inner].shape[-1] + 1) // 2
        assert torch.equal(canvases[outer][..., offset : offset + size, offset : offset + size], canvases[inner])

    maps = [config.source(name)["label_map"] for name in three_sources]
    assert [len(m) for m in maps] == [10, 10, 8]
    assert len(set().union(*maps)) == 28  # disjoint
    for name in three_sources:
        full = model.target_logits(x, task=name)
        assert torch.equal(model(x, task=name), full[:, config.source(name)["label_map"]])


def test_every_task_of_a_three_source_prompt_reloads_exactly(three_sources, transformers_folder, tmp_path):
    sources = three_sources | {"module_rgb": module_classifier(3, 2, 24, RGB_MEAN, RGB_STD, seed=7)}
    target = load_classifier(transformers_folder)  # 12 classes: too few for 10 + 10 + 2, enough for 2 + 3 + 4
    with pytest.raises(ValueError, match="too few target classes: the sources have 22 classes in all"):
        KiOPModel.from_models(target, sources, image_size=32, ring_sizes=[36, 44, 52, 60])
    small = {
        "a": sources["module_rgb"],
        "b": module_classifier(1, 3, 32, GRAY_MEAN, GRAY_STD, seed=8),
        "c": module_classifier(3, 4, 28, RGB_MEAN, RGB_STD, seed=9),
    }
    model = randomised(KiOPModel.from_models(target, small, image_size=32, ring_sizes=[36, 40, 44, 48]))
    model.save_pretrained(tmp_path)
    reloaded = KiOPModel.from_pretrained(tmp_path)
    assert reloaded.config.to_diff_dict() == model.config.to_diff_dict()
    gray = torch.rand(2, 1, 32, 32)
    for task in reloaded.config.task_names:
        assert torch.equal(reloaded(gray, task=task), model(gray, task=task))
        assert reloaded.class_names(task) == model.class_names(task)


def test_bad_source_sets_are_refused_before_training(timm_folder, transformers_folder):
    target, gray = load_classifier(transformers_folder), load_classifier(timm_folder)
    two_channel = module_classifier(2, 2, 32, [0.5, 0.5], [0.2, 0.2], seed=3)
    with pytest.raises(ValueError, match="2-channel images, which a 3-channel target cannot be served"):
        KiOPModel.from_models(target, {"odd": two_channel}, image_size=32, ring_sizes=[36, 40])
    with pytest.raises(ValueError, match="one ring for the core plus one per source"):
        KiOPModel.from_models(target, {"gray": gray}, image_size=32, ring_sizes=[36, 40, 44])
    with pytest.raises(ValueError, match="'target' names the target's own task"):
        KiOPModel.from_models(target, {"target": gray}, image_size=32, ring_sizes=[36, 40])


@pytest.mark.parametrize("target_channels", [3, 1])
def test_a_timm_a_vit_and_a_module_source_train_one_prompt(target_channels, three_sources, tmp_path):
    """Gray and RGB sources of three families and three input sizes into an RGB target, and into a gray one."""
    mean, std = (RGB_MEAN, RGB_STD) if target_channels == 3 else (GRAY_MEAN, GRAY_STD)
    target = module_classifier(target_channels, 40, 32, mean, std, seed=2)
    model = KiOPModel.from_models(target, three_sources, image_size=32, ring_sizes=[36, 40, 44, 48])
    args = KiOPTrainingArguments(output_dir=str(tmp_path), source_weights={"vit_rgb": 2.0}, **TINY)
    trainer = KiOPTrainer(model, three_sources, args)
    before = [ring.detach().clone() for ring in model.prompt.rings]
    trainer.train()
    finish_run(trainer)

    assert all(not torch.equal(a, b) for a, b in zip(before, model.prompt.rings))
    for name, source in three_sources.items():  # each bank holds the source's own size and channels
        assert trainer.banks[name].images.shape[1:] == (source.num_channels, source.image_size, source.image_size)
    assert "bn" not in trainer.synthesizers["vit_rgb"].active_terms  # the ViT has no BatchNorm
    assert set(trainer.history[-1]) >= {"kd/timm_gray", "kd/vit_rgb", "kd/module_rgb", "kd/target"}
    reloaded = KiOPModel.from_pretrained(tmp_path, target=target)
    x = torch.rand(2, 3, 32, 32)
    for task in reloaded.config.task_names:
        assert torch.equal(reloaded(x, task=task), model(x, task=task))


def test_frequency_label_maps_are_one_to_one_disjoint_and_follow_the_counts():
    generator = torch.Generator().manual_seed(0)
    counts = {
        "a": torch.randint(0, 50, (10, 40), generator=generator),
        "b": torch.randint(0, 50, (12, 40), generator=generator),
    }
    maps = frequency_label_maps(counts)
    assert [len(maps["a"]), len(maps["b"])] == [10, 12]
    assert len(set(maps["a"]) | set(maps["b"])) == 22  # injective within and disjoint across sources
    assert all(0 <= index < 40 for index in maps["a"] + maps["b"])

    clear = torch.zeros(3, 5)
    clear[0, 4], clear[1, 2], clear[2, 2], clear[2, 0] = 9, 8, 3, 2  # class 2 loses target 2 to class 1
    assert frequency_label_maps({"s": clear}) == {"s": [4, 2, 0]}
    with pytest.raises(ValueError, match="too few target classes"):
        frequency_label_maps({"a": torch.zeros(3, 4), "b": torch.zeros(2, 4)})


def test_frequency_mapping_in_training_is_recorded_saved_and_restored_on_resume(three_sources, tmp_path):
    target = module_classifier(3, 40, 32, RGB_MEAN, RGB_STD, seed=2)
    model = KiOPModel.from_models(target, three_sources, image_size=32, ring_sizes=[36, 40, 44, 48])
    random_maps = {name: model.config.source(name)["label_map"] for name in three_sources}
    args = KiOPTrainingArguments(
        output_dir=str(tmp_path), label_mapping="frequency", label_mapping_refresh_rounds=1, **TINY
    )
    trainer = KiOPTrainer(model, three_sources, args)
    trainer.train()
    finish_run(trainer)
    config = model.config
    maps = {name: config.source(name)["label_map"] for name in three_sources}
    assert config.label_mapping == "frequency" and maps != random_maps
    assert len(set().union(*maps.values())) == 28

    reloaded = KiOPModel.from_pretrained(tmp_path, target=target)
    assert reloaded.config.label_mapping == "frequency"
    assert {name: reloaded.config.source(name)["label_map"] for name in three_sources} == maps

    fresh = KiOPModel.from_models(target, three_sources, image_size=32, ring_sizes=[36, 40, 44, 48])
    resumed = KiOPTrainer(fresh, three_sources, args)
    resumed.train(resume_from_checkpoint=True)  # the last checkpoint is the end of the run
    finish_run(resumed)
    assert {name: fresh.config.source(name)["label_map"] for name in three_sources} == maps
    assert torch.equal(load_file(tmp_path / "model.safetensors")["rings.3"], fresh.prompt.rings[3].detach())
