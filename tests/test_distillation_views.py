"""The knowledge-storing views: whole-pixel shifts, mirrors, mixup and CutMix, read alike by source and prompt."""

import pytest
import torch

from kiop_hf import KiOPModel, load_classifier
from kiop_hf.augment import mix, shift_and_flip
from kiop_hf.trainer import KiOPTrainer
from kiop_hf.training_args import KiOPTrainingArguments

from .helpers import TINY_TRAINING


def test_shifts_move_whole_pixels_and_flips_mirror():
    torch.manual_seed(0)
    images = torch.rand(64, 1, 8, 8)
    moved = shift_and_flip(images, max_shift=2, flip=True)
    for image, view in zip(images, moved):
        candidates = [image.flip(-1), image]
        # some whole-pixel shift (edge pixels repeated) of the image or of its mirror gives the view exactly
        found = any(
            torch.allclose(view[:, 2:-2, 2:-2], c[:, 2 - dy : 6 - dy, 2 - dx : 6 - dx], atol=1e-6)
            for c in candidates
            for dy in range(-2, 3)
            for dx in range(-2, 3)
        )
        assert found
    assert torch.equal(shift_and_flip(images, max_shift=0, flip=False), images)


def test_mixup_blends_and_cutmix_pastes_a_box_of_another_image():
    torch.manual_seed(0)
    images = torch.stack([torch.full((1, 16, 16), float(i)) for i in range(32)])
    assert torch.equal(mix(images, "cutmix", 0.0, 1.0), images)
    blended = mix(images, "mixup", 1.0, 1.0)
    assert all(len(b.unique()) == 1 for b in blended)  # constant images stay constant under a blend
    pasted = mix(images, "cutmix", 1.0, 1.0)
    changed = 0
    for image, view in zip(images, pasted):
        values = view.unique()
        assert len(values) <= 2 and image[0, 0, 0] in values or len(values) == 1
        other = view != image
        if other.any():
            changed += 1
            rows, cols = other[0].any(1).nonzero(), other[0].any(0).nonzero()
            box = other[0, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
            assert box.all()  # the other image fills one rectangle
    assert changed > 16
    with pytest.raises(ValueError, match="unknown mixing method"):
        mix(images, "blend", 1.0, 1.0)


def test_knowledge_storing_asks_the_source_about_the_very_augmented_images(transformers_folder, timm_folder, tmp_path):
    target, source = load_classifier(transformers_folder), load_classifier(timm_folder)
    model = KiOPModel.from_models(target, {"gray": source}, image_size=32, ring_sizes=[36, 40])
    args = KiOPTrainingArguments(
        output_dir=str(tmp_path), **TINY_TRAINING, kd_shift=2, kd_flip=True, kd_mix="cutmix", kd_mix_prob=1.0
    )
    trainer = KiOPTrainer(model, {"gray": source}, args)
    trainer.setup()
    trainer.synthesize()
    bank = trainer.banks["gray"].images
    seen = []
    handle = source.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].detach().clone()))
    prompted = []
    original = trainer.prompted
    trainer.prompted = lambda task, images: prompted.append(images.detach().clone()) or original(task, images)
    trainer.knowledge_storing_step()
    handle.remove()
    (teacher_view,) = seen
    assert not any(torch.equal(teacher_view[0], image) for image in bank)  # an augmented view, not a bank image
    assert torch.equal(prompted[0], teacher_view)  # the prompt is trained on the very image the source read


def test_distillation_view_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="kd_mix must be one of"):
        KiOPTrainingArguments(output_dir=str(tmp_path), kd_mix="blend")
    with pytest.raises(ValueError, match="kd_mix_prob must be between 0 and 1"):
        KiOPTrainingArguments(output_dir=str(tmp_path), kd_mix_prob=1.5)
    with pytest.raises(ValueError, match="kd_shift must be an integer >= 0"):
        KiOPTrainingArguments(output_dir=str(tmp_path), kd_shift=-1)
