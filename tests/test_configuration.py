import json

import pytest
from transformers import AutoConfig

from kiop_hf import KiOPPromptConfig


def source(name, label_map, classes=None, **extra):
    classes = classes or [f"{name}_{i}" for i in range(len(label_map))]
    return {"name": name, "class_names": classes, "label_map": label_map, **extra}


def test_default_config_is_valid_and_has_the_kiop_model_type():
    config = KiOPPromptConfig()
    assert config.model_type == "kiop_prompt"
    assert config.task_names == ["target"]


def test_task_routing_counts_rings_from_the_core_outwards():
    config = KiOPPromptConfig(
        image_size=32,
        ring_sizes=[36, 128, 224],
        target_num_labels=30,
        sources=[source("a", list(range(10))), source("b", list(range(10, 20)))],
    )
    assert config.task_names == ["target", "a", "b"]
    assert [config.num_rings_for(t) for t in (None, "target", "a", "b")] == [1, 1, 2, 3]
    assert [config.canvas_size_for(t) for t in ("target", "a", "b")] == [36, 128, 224]
    with pytest.raises(KeyError, match="unknown task 'c'"):
        config.num_rings_for("c")


def test_saved_config_round_trips_through_auto_config(tmp_path):
    import kiop_hf  # noqa: F401  (registers the Auto classes)

    config = KiOPPromptConfig(
        ring_sizes=[36, 64],
        target_num_labels=12,
        target_name_or_path="org/target",
        target_revision="v1",
        target_mean=[0.1, 0.2, 0.3],
        target_std=[0.4, 0.5, 0.6],
        sources=[source("fashion", [3, 1, 2], ["a", "b", "c"], num_channels=1, name_or_path="org/fashion")],
    )
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert type(loaded) is KiOPPromptConfig
    assert loaded.to_diff_dict() == config.to_diff_dict()
    assert loaded.source("fashion")["label_map"] == [3, 1, 2]
    assert loaded.source("fashion")["num_channels"] == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"ring_sizes": [36, 36]}, "strictly increasing"),
        ({"ring_sizes": [30]}, "strictly increasing"),
        ({"ring_sizes": []}, "strictly increasing"),
        ({"image_size": 0}, "image_size must be a positive integer"),
        ({"num_channels": 0}, "num_channels must be a positive integer"),
        (
            {"ring_sizes": [36, 64, 128], "target_num_labels": 10, "sources": [source("a", [0])]},
            "one ring for the core",
        ),
        (
            {"ring_sizes": [36, 64], "target_num_labels": 5, "sources": [source("a", [0, 1, 2, 3, 4, 5])]},
            "too few target classes",
        ),
        ({"ring_sizes": [36, 64], "target_num_labels": 5, "sources": [source("a", [0, 7])]}, "out of range"),
        (
            {"ring_sizes": [36, 64], "target_num_labels": 5, "sources": [source("a", [0], image_size=0)]},
            "a positive size is needed",
        ),
        ({"ring_sizes": [36, 64], "target_num_labels": 5, "sources": [source("a", [1, 1])]}, "used twice"),
        (
            {
                "ring_sizes": [36, 64, 96],
                "target_num_labels": 5,
                "sources": [source("a", [0, 1]), source("b", [1, 2])],
            },
            "also by source 'a'",
        ),
        (
            {"ring_sizes": [36, 64, 96], "target_num_labels": 5, "sources": [source("a", [0]), source("a", [1])]},
            "source names must be unique",
        ),
        (
            {"ring_sizes": [36, 64], "target_num_labels": 5, "sources": [source("target", [0])]},
            "cannot be a source name",
        ),
        (
            {"ring_sizes": [36, 64], "target_num_labels": 5, "sources": [source("a", [0, 1], ["x"])]},
            "label_map has 2 entries for 1 classes",
        ),
        ({"ring_sizes": [36, 64], "sources": [source("a", [0])]}, "target_num_labels is required"),
        (
            {"ring_sizes": [36, 64], "target_num_labels": 5, "sources": [source("a", [0], num_channels=4)]},
            "cannot be served",
        ),
        ({"ring_sizes": [36, 64], "sources": [{"name": "a"}]}, "needs \\['class_names', 'label_map'\\]"),
        ({"target_mean": [0.5]}, "target_mean needs 3 values"),
        ({"target_std": [0.5, 0.0, 0.5]}, "target_std must be positive"),
        ({"target_num_labels": 3, "target_class_names": ["a", "b"]}, "target_class_names has 2 names"),
    ],
)
def test_invalid_configurations_are_refused_with_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        KiOPPromptConfig(**kwargs)


CONFIG_CATALOGUE = [
    (dict(image_size=32.5), ValueError, "image_size must be a positive integer \\(at most 1,024\\), got 32.5"),
    (dict(image_size=True), ValueError, "image_size must be a positive integer"),
    (dict(ring_sizes=[36, 10**6]), ValueError, r"ring_sizes\[1\] must be a positive integer \(at most 1,024\)"),
    (dict(ring_sizes="36"), ValueError, "ring_sizes must be a list"),
    (dict(num_labels=10_000_000), ValueError, "num_labels must be a positive integer \\(at most 100,000\\)"),
    (dict(target_num_labels=-3), ValueError, "target_num_labels must be a positive integer"),
    (dict(target_mean=[0.5, float("nan"), 0.5]), ValueError, "target_mean must be a list of finite numbers"),
    (dict(target_class_names=[1, 2]), TypeError, "target_class_names must be a list of at most 100,000 strings"),
    (dict(target_library="pickle"), ValueError, "target_library must be one of"),
    (dict(target_revision=7), TypeError, "target_revision must be a string or null"),
    (dict(label_mapping="best"), ValueError, "label_mapping must be one of"),
    (
        dict(target_num_labels=10, sources=[source("../evil", [0])], ring_sizes=[36, 40]),
        ValueError,
        "usable as a file name",
    ),
    (dict(target_num_labels=10, sources=[source("", [0])], ring_sizes=[36, 40]), ValueError, "usable as a file name"),
    (
        dict(target_num_labels=10, sources=[source("a", [0.0])], ring_sizes=[36, 40]),
        TypeError,
        "label_map must be a list of integers",
    ),
    (
        dict(target_num_labels=10, sources=[source("a", [0], classes=[["x"]])], ring_sizes=[36, 40]),
        TypeError,
        "class_names must be",
    ),
    (dict(target_num_labels=10, sources=[source("a", [0], extra=1)], ring_sizes=[36, 40]), ValueError, "unknown keys"),
    (dict(target_num_labels=10, sources=["a"], ring_sizes=[36, 40]), TypeError, "a source entry must be an object"),
]


@pytest.mark.parametrize("fields, error, message", CONFIG_CATALOGUE)
def test_bad_config_fields_are_refused_by_name(fields, error, message):
    with pytest.raises(error, match=message):
        KiOPPromptConfig(**fields)


def test_a_folder_without_config_json_or_with_a_non_object_is_refused(tmp_path):
    with pytest.raises(OSError, match="has no config.json: it is not a saved kiop_hf prompt"):
        KiOPPromptConfig.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="config.json must hold a JSON object, got list"):
        KiOPPromptConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda config: '"a JSON string"', "config.json must hold a JSON object, got str"),
        (lambda config: config | {"dtype": ["float32"]}, r"dtype must name a torch dtype such as 'float32', got \["),
        (lambda config: config | {"torch_dtype": "float99"}, "torch_dtype must name a torch dtype .* got 'float99'"),
    ],
)
def test_a_saved_prompt_whose_config_json_was_edited_badly_names_the_field(edit, message, tmp_path):
    from kiop_hf import KiOPModel, KiOPVisualPrompt

    KiOPVisualPrompt(KiOPPromptConfig(image_size=32, ring_sizes=[36], target_num_labels=12)).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    edited = edit(config)
    (tmp_path / "config.json").write_text(edited if isinstance(edited, str) else json.dumps(edited))
    for load in (KiOPPromptConfig.from_pretrained, KiOPVisualPrompt.from_pretrained, KiOPModel.from_pretrained):
        with pytest.raises(ValueError, match=message):
            load(tmp_path)


def test_fuzzed_config_files_raise_only_clear_errors_quickly_and_never_load_inconsistent(tmp_path):
    """300 mutations of a valid config.json (fixed seed): each load raises ValueError / TypeError / OSError or
    gives a config that passes its own checks, in under a second."""
    import json
    import random
    import time

    valid = KiOPPromptConfig(
        image_size=32,
        ring_sizes=[36, 64, 72],
        target_num_labels=30,
        target_library="timm",
        num_channels=3,
        target_mean=[0.5] * 3,
        target_std=[0.25] * 3,
        target_class_names=[f"c{i}" for i in range(30)],
        sources=[source("a", list(range(10))), source("b", list(range(10, 20)))],
    )
    valid.save_pretrained(tmp_path / "valid")
    original = json.loads((tmp_path / "valid" / "config.json").read_text())
    rng = random.Random(0)
    junk = [None, True, -1, 0, 3.5, float("inf"), 10**9, "", "x/../y", [], [1, "a"], {}, {"a": 1}, "36", [10**7]]

    def mutate(value, depth=0):
        if isinstance(value, dict) and value and depth < 3 and rng.random() < 0.7:
            key = rng.choice(list(value))
            changed = dict(value)
            if rng.random() < 0.15:
                del changed[key]
            else:
                changed[key] = mutate(value[key], depth + 1)
            return changed
        if isinstance(value, list) and value and depth < 3 and rng.random() < 0.6:
            changed = list(value)
            index = rng.randrange(len(changed))
            changed[index] = mutate(changed[index], depth + 1)
            return changed
        return rng.choice(junk)

    outcomes = {"loaded": 0, "refused": 0}
    folder = tmp_path / "fuzz"
    folder.mkdir()
    for i in range(300):
        if i % 50 == 49:
            text = json.dumps(original)[: rng.randrange(1, 200)]  # a truncated file
        elif i % 50 == 48:
            text = json.dumps(rng.choice([[], "config", 3, None]))  # not an object
        else:
            text = json.dumps(mutate(original))
        (folder / "config.json").write_text(text)
        start = time.perf_counter()
        try:
            config = KiOPPromptConfig.from_pretrained(folder)
        except (ValueError, TypeError, OSError):
            outcomes["refused"] += 1
        else:
            outcomes["loaded"] += 1
            config.validate()  # whatever loads is consistent
            assert all(isinstance(n, str) for n in config.target_class_names or [])
            assert all(isinstance(i, int) for s in config.sources for i in s["label_map"])
        assert time.perf_counter() - start < 1.0, f"mutation {i} took too long: {text[:200]}"
    assert outcomes["refused"] > 100 and outcomes["loaded"] > 10, outcomes
