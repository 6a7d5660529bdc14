"""Small real models saved in Hub layout, shared by the tests."""

import pytest
import torch

from .helpers import GRAY_MEAN, GRAY_STD, RGB_MEAN, RGB_STD, TinyCNN
from .hub_fixtures import hub  # noqa: F401  (the loopback Hub, for tests that push and download)


@pytest.fixture(scope="session")
def timm_folder(tmp_path_factory):
    """A randomly initialised timm test_resnet (1 channel, 10 classes) saved with timm's save_for_hf."""
    import timm
    from timm.models import save_for_hf

    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=10, in_chans=1)
    folder = tmp_path_factory.mktemp("timm_gray")
    save_for_hf(
        model,
        str(folder),
        model_config={"label_names": [f"class_{i}" for i in range(10)]},
        data_config={"input_size": (1, 32, 32), "mean": tuple(GRAY_MEAN), "std": tuple(GRAY_STD)},
        safe_serialization=True,
    )
    return folder


@pytest.fixture(scope="session")
def transformers_folder(tmp_path_factory):
    """A randomly initialised transformers ResNet (RGB, 12 classes) with its image processor."""
    from transformers import ResNetConfig, ResNetForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    names = [f"label_{i}" for i in range(12)]
    config = ResNetConfig(
        num_channels=3,
        embedding_size=8,
        hidden_sizes=[8, 16],
        depths=[1, 1],
        layer_type="basic",
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
    )
    folder = tmp_path_factory.mktemp("transformers_rgb")
    ResNetForImageClassification(config).eval().save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=RGB_MEAN, image_std=RGB_STD).save_pretrained(folder)
    return folder


@pytest.fixture
def gray_source(hub, timm_folder):  # noqa: F811  (the fixture, by name)
    """The tests' grayscale source, published on the loopback Hub (a published prompt names its models by Hub id)."""
    hub.api.create_repo("user/gray-source", exist_ok=True)
    hub.api.upload_folder(folder_path=timm_folder, repo_id="user/gray-source")
    from kiop_hf import load_classifier

    return load_classifier("user/gray-source")


@pytest.fixture
def tiny_cnn():
    torch.manual_seed(0)
    return TinyCNN()


@pytest.fixture(scope="session")
def clip_folder(tmp_path_factory):
    """A randomly initialised tiny CLIP (32px RGB) with a word-level tokenizer, built locally (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, PreTrainedTokenizerFast

    words = [
        "a",
        "photo",
        "of",
        "the",
        "letter",
        "digit",
        "sketch",
        "blurry",
        "x",
        "y",
        "z",
        "0",
        "1",
        "2",
        "3",
        "4",
        "5",
        "6",
        "7",
        "8",
        "9",
    ]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "<unk>": 2} | {w: i + 3 for i, w in enumerate(words)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", 0), ("<|endoftext|>", 1)]
    )
    folder = tmp_path_factory.mktemp("clip")
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<unk>",
    ).save_pretrained(folder)
    torch.manual_seed(0)
    text = dict(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=16,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    vision = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8
    )
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval().save_pretrained(folder)
    CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_mean=RGB_MEAN, image_std=RGB_STD
    ).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def vit_folder(tmp_path_factory):
    """A randomly initialised tiny transformers ViT (RGB, 28px, 10 classes, no BatchNorm) with its processor."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=28,
        patch_size=7,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        id2label={i: f"vit_{i}" for i in range(10)},
        label2id={f"vit_{i}": i for i in range(10)},
    )
    folder = tmp_path_factory.mktemp("vit_rgb")
    ViTForImageClassification(config).eval().save_pretrained(folder)
    ViTImageProcessor(size={"height": 28, "width": 28}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(
        folder
    )
    return folder
