"""Synthesizers on their own: what one round returns, which terms act, what persists across rounds."""

import pytest
import torch

from kiop_hf import load_classifier
from kiop_hf.synthesis import DataBank, make_synthesizer

SMALL = dict(batch_size=6, steps=3, bank_size=32, num_negatives=4, head_dim=8)


@pytest.fixture
def gray_source(timm_folder):
    return load_classifier(timm_folder)


def student_of(model):
    """A stand-in for the prompted target: any differentiable classifier over the same classes."""
    return lambda x: model(x.flip(-1))


def test_a_cmi_round_returns_its_best_batch_and_can_keep_its_generator(gray_source):
    synthesizer = make_synthesizer("cmi", gray_source, reset_generator=False, **SMALL)
    assert synthesizer.active_terms == ["bn", "oh", "adv", "cr"]
    images = synthesizer.synthesize(student_of(gray_source))
    assert images.shape == (6, 1, 32, 32) and 0 <= images.min() and images.max() <= 1
    assert set(synthesizer.last_losses) == {"bn", "oh", "adv", "cr", "total"}
    assert synthesizer.memory.count == 6  # the best batch feeds the contrastive memory

    state = synthesizer.state_dict()  # a kept generator persists across rounds (and checkpoints)
    again = make_synthesizer("cmi", gray_source, reset_generator=False, **SMALL)
    again.load_state_dict(state)
    z = torch.randn(2, again.latent_dim)
    with torch.no_grad():
        assert torch.equal(again.generator.eval()(z), synthesizer.generator.eval()(z))


def test_deepinversion_optimises_pixels_with_a_tv_prior_and_no_contrastive_term(gray_source):
    synthesizer = make_synthesizer("deepinversion", gray_source, batch_size=6, steps=3)
    assert synthesizer.active_terms == ["bn", "oh", "adv", "tv"]
    images = synthesizer.synthesize(student_of(gray_source))
    assert images.shape == (6, 1, 32, 32)
    with pytest.raises(ValueError, match="unknown synthesis method 'gan'"):
        make_synthesizer("gan", gray_source)


def test_zero_weights_switch_terms_off(gray_source):
    synthesizer = make_synthesizer("cmi", gray_source, bn_weight=0, cr_weight=0, **SMALL)
    assert synthesizer.active_terms == ["oh", "adv"]
    assert synthesizer.describe_terms() == "CMISynthesizer with terms oh, adv"


def test_the_data_bank_keeps_the_newest_images_up_to_its_size():
    bank = DataBank(max_size=5)
    with pytest.raises(RuntimeError, match="empty"):
        bank.sample(1)
    bank.add(torch.zeros(3, 1, 2, 2))
    bank.add(torch.ones(4, 1, 2, 2))
    assert len(bank) == 5 and bank.images[:1].sum() == 0 and bank.images[1:].min() == 1


@pytest.mark.parametrize("architecture", ["test_convnext", "test_vit"])
def test_models_without_batchnorm_keep_the_contrastive_term_on_their_layernorm_inputs(architecture):
    """ConvNeXt's LayerNorm2d normalises channels-first maps, a ViT's LayerNorm normalises tokens: both give
    per-sample features of the width the projection head expects, and no BN prior."""
    import timm

    torch.manual_seed(0)
    size = {"img_size": 32} if architecture == "test_vit" else {}
    network = timm.create_model(architecture, num_classes=5, **size)
    model = load_classifier(network, image_size=32, mean=[0.5] * 3, std=[0.5] * 3)
    synthesizer = make_synthesizer("cmi", model, **SMALL)
    assert synthesizer.active_terms == ["oh", "adv", "cr"]
    assert "no BatchNorm layers" in synthesizer.describe_terms()
    images = synthesizer.synthesize(student_of(model))
    assert images.shape == (6, 3, 32, 32)
    assert synthesizer.memory.count == 6 and synthesizer.memory.features.shape[1] == 2 * synthesizer.statistics.feature_dim
