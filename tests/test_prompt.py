import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel

from kiop_hf import KiOPPromptConfig, KiOPVisualPrompt
from kiop_hf.modeling_kiop import ring_mask


def make_config(ring_sizes=(36, 128), num_channels=3, num_sources=1):
    sources = [
        {"name": f"s{k}", "class_names": [str(i) for i in range(10)], "label_map": list(range(10 * k, 10 * k + 10))}
        for k in range(num_sources)
    ]
    return KiOPPromptConfig(
        image_size=32, ring_sizes=list(ring_sizes), num_channels=num_channels, target_num_labels=40, sources=sources
    )


def test_reference_geometry_has_816_plus_45264_trainable_ring_values():
    prompt = KiOPVisualPrompt(make_config())
    assert [ring.numel() for ring in prompt.rings] == [816, 45_264]
    assert prompt.num_parameters(only_trainable=True) == 816 + 45_264


def test_prompt_starts_grey_and_keeps_the_image_in_the_centre():
    prompt = KiOPVisualPrompt(make_config())
    images = torch.rand(2, 3, 32, 32)
    core = prompt(images)  # the target's own task: core ring only
    assert core.shape == (2, 3, 36, 36)
    assert torch.equal(core[:, :, 2:34, 2:34], images)
    assert torch.all(core[:, :, ring_mask(32, 36)] == 0.5)
    full = prompt(images, task="s0")
    assert full.shape == (2, 3, 128, 128)
    # 36 -> 128 pads 92 pixels: 46 on each side; the core canvas sits inside unchanged.
    assert torch.equal(full[:, :, 46:82, 46:82], core)


def test_uneven_padding_puts_the_extra_pixel_top_left():
    mask = ring_mask(2, 5)
    inside = (~mask).nonzero()
    assert inside.min().item() == 2 and inside.max().item() == 3  # 3 padding pixels: 2 before, 1 after


def test_ring_values_are_sigmoid_of_the_parameters_and_only_on_the_ring():
    prompt = KiOPVisualPrompt(make_config(ring_sizes=(34, 40), num_channels=1))
    with torch.no_grad():
        prompt.rings[1].copy_(torch.linspace(-3, 3, prompt.rings[1].numel()).view_as(prompt.rings[1]))
    canvas = prompt.ring_canvas(1)
    mask = ring_mask(34, 40)
    assert torch.allclose(canvas[:, mask], torch.sigmoid(prompt.rings[1]))
    assert torch.all(canvas[:, ~mask] == 0)


def test_gradients_reach_only_the_rings_a_task_uses():
    prompt = KiOPVisualPrompt(make_config())
    prompt(torch.rand(1, 3, 32, 32)).sum().backward()
    assert prompt.rings[0].grad is not None and prompt.rings[1].grad is None


def test_three_sources_nest_one_ring_each():
    prompt = KiOPVisualPrompt(make_config(ring_sizes=(36, 64, 96, 128), num_sources=3))
    images = torch.rand(1, 3, 32, 32)
    assert [prompt(images, task=t).shape[-1] for t in ("target", "s0", "s1", "s2")] == [36, 64, 96, 128]


@pytest.mark.parametrize("shape", [(2, 3, 28, 28), (2, 1, 32, 32), (3, 32, 32)])
def test_wrong_image_shape_is_refused_with_the_expected_shape(shape):
    prompt = KiOPVisualPrompt(make_config())
    with pytest.raises(ValueError, match=r"expects images of shape \(batch, 3, 32, 32\)"):
        prompt(torch.rand(*shape))


def test_save_pretrained_round_trips_exactly_and_writes_only_config_and_safetensors(tmp_path):
    torch.manual_seed(0)
    prompt = KiOPVisualPrompt(make_config())
    with torch.no_grad():
        for ring in prompt.rings:
            ring.normal_()
    prompt.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "prompt.png",
    ]
    assert set(load_file(tmp_path / "model.safetensors")) == {"rings.0", "rings.1"}

    loaded = KiOPVisualPrompt.from_pretrained(tmp_path)
    for ring, original in zip(loaded.rings, prompt.rings):
        assert torch.equal(ring, original)
    images = torch.rand(2, 3, 32, 32)
    assert torch.equal(loaded(images, task="s0"), prompt(images, task="s0"))
    assert loaded.config.to_diff_dict() == prompt.config.to_diff_dict()


def test_auto_model_resolves_the_prompt_class(tmp_path):
    KiOPVisualPrompt(make_config()).save_pretrained(tmp_path)
    assert type(AutoModel.from_pretrained(tmp_path)) is KiOPVisualPrompt


def test_a_corrupt_weights_file_is_named_in_the_error(tmp_path):
    KiOPVisualPrompt(KiOPPromptConfig()).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="model.safetensors is not a readable safetensors file"):
        KiOPVisualPrompt.from_pretrained(tmp_path)
