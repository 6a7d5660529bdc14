"""Synthesizers on their own: what one round returns, which terms act, what persists across rounds."""

import pytest
import torch

from kiop_hf import load_classifier
from kiop_hf.synthesis import DataBank, make_synthesizer

SMALL = dict(batch_size=6, synthesis_steps=3, memory_bank_size=32, num_negatives=4, head_dim=8)


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
    assert images.shape == (6, 1, 32, 32) and images.min() >= 0 and images.max() <= 1
    assert set(synthesizer.last_losses) == {"bn", "oh", "adv", "cr", "total"}
    assert synthesizer.memory.count == 6  # the best batch feeds the contrastive memory

    state = synthesizer.state_dict()  # a kept generator persists across rounds (and checkpoints)
    again = make_synthesizer("cmi", gray_source, reset_generator=False, **SMALL)
    again.load_state_dict(state)
    z = torch.randn(2, again.latent_dim)
    with torch.no_grad():
        assert torch.equal(again.generator.eval()(z), synthesizer.generator.eval()(z))


def test_deepinversion_optimises_pixels_with_a_tv_prior_and_no_contrastive_term(gray_source):
    synthesizer = make_synthesizer("deepinversion", gray_source, batch_size=6, synthesis_steps=3)
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
    assert (
        synthesizer.memory.count == 6
        and synthesizer.memory.features.shape[1] == 2 * synthesizer.statistics.feature_dim
    )


def test_a_fast_round_adapts_meta_weights_in_a_few_steps_and_moves_them_towards_the_adapted_ones(gray_source):
    synthesizer = make_synthesizer("fast", gray_source, batch_size=10, synthesis_steps=2, meta_step=0.5)
    assert synthesizer.active_terms == ["bn", "oh", "adv"]  # the contrastive term is optional, off by default
    torch.manual_seed(0)
    images = synthesizer.synthesize(student_of(gray_source))
    assert images.shape == (10, 1, 32, 32) and images.dtype == torch.float32
    assert torch.equal(synthesizer._round_labels(images.device), torch.arange(10) % 10)  # every class, every round

    # Reptile: after a round the meta weights sit halfway between where they started and the adapted weights
    start = {k: v.clone() for k, v in synthesizer.meta_generator.state_dict().items()}
    optimizer_before = synthesizer.optimizer
    synthesizer.synthesize(student_of(gray_source))
    assert synthesizer.optimizer is optimizer_before  # allocated once, reset in place
    meta, fast = synthesizer.meta_generator.state_dict(), synthesizer.generator.state_dict()
    key = "project.0.weight"
    assert torch.allclose(meta[key], 0.5 * (start[key] + fast[key]), atol=1e-6)
    assert not torch.equal(meta[key], start[key])
    assert len(synthesizer.statistics.averages) == len(synthesizer.statistics)  # BN momentum averages committed

    # what persists (meta generator, meta latent, BN averages) restores a synthesizer that continues identically
    again = make_synthesizer("fast", gray_source, batch_size=10, synthesis_steps=2, meta_step=0.5)
    again.load_state_dict(synthesizer.state_dict())
    torch.manual_seed(1)
    expected = synthesizer.synthesize(student_of(gray_source))
    torch.manual_seed(1)
    assert torch.equal(again.synthesize(student_of(gray_source)), expected)


def test_fast_settings_out_of_range_are_refused(gray_source):
    with pytest.raises(ValueError, match="meta_step must be in"):
        make_synthesizer("fast", gray_source, meta_step=0)
    with pytest.raises(ValueError, match="bn_momentum must be in"):
        make_synthesizer("fast", gray_source, bn_momentum=1.0)


def test_the_bn_prior_with_momentum_blends_the_batch_with_earlier_rounds(gray_source):
    from kiop_hf.synthesis.priors import NormLayerInputs

    statistics = NormLayerInputs(gray_source.model, momentum=0.9)
    first, second = torch.rand(8, 1, 32, 32), torch.rand(8, 1, 32, 32) * 0.2
    with statistics, torch.no_grad():
        gray_source(first)
        plain = statistics.loss()
        statistics.commit()
        statistics.clear()
        gray_source(second)
        blended = statistics.loss()
    reference = NormLayerInputs(gray_source.model)
    with reference, torch.no_grad():
        gray_source(second)
        alone = reference.loss()
    assert plain > 0 and not torch.isclose(blended, alone)  # the average of the first batch pulls the second


def test_a_bounded_bank_is_a_ring_buffer_and_draws_a_share_from_its_newest_batch():
    bank = DataBank(max_size=6)
    bank.add(torch.zeros(4, 1, 2, 2))
    bank.add(torch.ones(4, 1, 2, 2))  # two of the zeros give way
    assert len(bank) == 6 and bank.images[:2].sum() == 0 and bank.images[2:].min() == 1
    assert bank.sample(10, recent_share=1.0).min() == 1  # all from the newest batch
    assert len(bank.sample(10, recent_share=0.3)) == 10

    restored = DataBank(max_size=6)
    restored.load_state_dict(bank.state_dict())
    torch.manual_seed(0)
    expected = bank.sample(5, recent_share=0.4)
    torch.manual_seed(0)
    assert torch.equal(restored.sample(5, recent_share=0.4), expected)
    bank.add(torch.full((1, 1, 2, 2), 2.0))
    restored.add(torch.full((1, 1, 2, 2), 2.0))
    assert torch.equal(bank.images, restored.images)

    unbounded = DataBank()
    for i in range(5):
        unbounded.add(torch.full((3, 1, 2, 2), float(i)))  # grows by doubling, oldest first
    assert len(unbounded) == 15 and unbounded.images[:, 0, 0, 0].tolist() == [i for i in range(5) for _ in range(3)]
    with pytest.raises(ValueError, match="max_size must be at least 1"):
        DataBank(max_size=0)


def test_fast_state_of_a_model_without_batchnorm_survives_a_checkpoint_round_trip():
    """No BatchNorm: no BN averages, an empty part of the state that a checkpoint's flat layout drops."""
    import timm

    from kiop_hf.checkpointing import join_state, split_state

    torch.manual_seed(0)
    model = load_classifier(
        timm.create_model("test_vit", num_classes=5, img_size=32), image_size=32, mean=[0.5] * 3, std=[0.5] * 3
    )
    synthesizer = make_synthesizer("fast", model, batch_size=4, synthesis_steps=1)
    synthesizer.synthesize(student_of(model))
    tensors, values = split_state(synthesizer.state_dict())
    again = make_synthesizer("fast", model, batch_size=4, synthesis_steps=1)
    again.load_state_dict(join_state(tensors | values))
    assert again.rounds_done == 1 and torch.equal(again.meta_latent, synthesizer.meta_latent)


def test_fast_labels_rotate_over_rounds_when_the_batch_cannot_hold_every_class(gray_source):
    synthesizer = make_synthesizer("fast", gray_source, batch_size=4, synthesis_steps=1)
    seen = []
    for _ in range(3):
        seen.append(synthesizer._round_labels(torch.device("cpu")).tolist())
        synthesizer.synthesize(student_of(gray_source))
    assert seen == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1]]


def test_a_synthesis_knob_left_to_the_method_takes_the_methods_own_value(tmp_path):
    from kiop_hf.cli import train_parser
    from kiop_hf.training_args import KiOPTrainingArguments

    fast = KiOPTrainingArguments(output_dir=str(tmp_path), synthesizer="fast")
    assert "synthesis_steps" not in fast.synthesizer_kwargs()  # the class's own default applies
    assert fast.synthesis_settings()["synthesis_steps"] == 5 and fast.synthesis_settings()["cr_weight"] == 0.0
    assert KiOPTrainingArguments(output_dir=str(tmp_path)).synthesis_settings()["synthesis_steps"] == 200  # cmi
    assert (
        KiOPTrainingArguments(output_dir=str(tmp_path), synthesizer="deepinversion").synthesis_settings()[
            "synthesis_lr"
        ]
        == 0.05
    )
    chosen = KiOPTrainingArguments(output_dir=str(tmp_path), synthesizer="fast", synthesis_steps=7)
    assert chosen.synthesis_settings()["synthesis_steps"] == 7
    assert "cmi 200, deepinversion 200, fast 5" in " ".join(train_parser().format_help().split())


@pytest.mark.parametrize("method", ["cmi", "fast", "deepinversion"])
def test_under_bf16_autocast_a_round_moves_its_images_as_far_as_in_fp32(method, gray_source):
    """Autocast caches its casts of trainable leaves for a whole block; a round's own optimizer steps must still
    reach its next forward passes (with the cache, a generator's draws moved 1/27 as far as in fp32)."""

    def distance_moved(context) -> float:
        torch.manual_seed(0)
        synthesizer = make_synthesizer(method, gray_source, batch_size=6, synthesis_steps=6)
        draws, draw = [], synthesizer._draw

        def recorded_draw():
            images = draw()
            draws.append(images.detach().float())
            return images

        synthesizer._draw = recorded_draw
        with context:
            synthesizer.synthesize(student_of(gray_source))
        return (draws[-1] - draws[0]).norm().item()

    fp32 = distance_moved(torch.autocast("cpu", enabled=False))
    bf16 = distance_moved(torch.autocast("cpu", dtype=torch.bfloat16))
    assert bf16 > 0.5 * fp32
    assert torch.is_autocast_cache_enabled()  # the caller's setting is back


def test_the_contrastive_term_rewards_local_views_that_find_their_own_global_view():
    """Against the same negatives' keys, local views close to their own global views cost less than shuffled ones;
    gradients reach the local features only (the global views and the negatives are the targets)."""
    from kiop_hf.synthesis.cmi import ProjectionHead, contrastive_loss

    torch.manual_seed(0)
    head = ProjectionHead(16, 32, 8)
    global_ = torch.randn(6, 16)
    with torch.no_grad():
        negative_keys = (head(torch.randn(20, 16)), head(torch.randn(20, 16)))
    local = (global_ + 0.05 * torch.randn(6, 16)).requires_grad_(True)
    aligned = contrastive_loss(head, local, global_.requires_grad_(True), negative_keys, 0.6)
    shuffled = contrastive_loss(head, local[torch.tensor([1, 2, 3, 4, 5, 0])], global_, negative_keys, 0.6)
    assert aligned < shuffled
    aligned.backward()
    assert local.grad.abs().sum() > 0 and global_.grad is None
