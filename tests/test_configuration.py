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
        image_size=32, ring_sizes=[36, 128, 224], target_num_labels=30,
        sources=[source("a", list(range(10))), source("b", list(range(10, 20)))],
    )  # fmt: skip
    assert config.task_names == ["target", "a", "b"]
    assert [config.num_rings_for(t) for t in (None, "target", "a", "b")] == [1, 1, 2, 3]
    assert [config.canvas_size_for(t) for t in ("target", "a", "b")] == [36, 128, 224]
    with pytest.raises(KeyError, match="unknown task 'c'"):
        config.num_rings_for("c")


def test_saved_config_round_trips_through_auto_config(tmp_path):
    import kiop_hf  # noqa: F401  (registers the Auto classes)

    config = KiOPPromptConfig(
        ring_sizes=[36, 64], target_num_labels=12, target_name_or_path="org/target", target_revision="v1",
        target_mean=[0.1, 0.2, 0.3], target_std=[0.4, 0.5, 0.6],
        sources=[source("fashion", [3, 1, 2], ["a", "b", "c"], num_channels=1, name_or_path="org/fashion")],
    )  # fmt: skip
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
        ({"ring_sizes": [36, 64, 128], "target_num_labels": 10, "sources": [source("a", [0])]}, "one ring for the core"),
        ({"ring_sizes": [36, 64], "target_num_labels": 5, "sources": [source("a", [0, 1, 2, 3, 4, 5])]},
         "too few target classes"),
        ({"ring_sizes": [36, 64], "target_num_labels": 5, "sources": [source("a", [0, 7])]}, "out of range"),
        ({"ring_sizes": [36, 64], "target_num_labels": 5, "sources": [source("a", [0], image_size=0)]},
         "a positive size is needed"),
        ({"ring_sizes": [36, 64], "target_num_labels": 5, "sources": [source("a", [1, 1])]}, "used twice"),
        ({"ring_sizes": [36, 64, 96], "target_num_labels": 5, "sources": [source("a", [0, 1]), source("b", [1, 2])]},
         "also by source 'a'"),
        ({"ring_sizes": [36, 64, 96], "target_num_labels": 5, "sources": [source("a", [0]), source("a", [1])]},
         "source names must be unique"),
        ({"ring_sizes": [36, 64], "target_num_labels": 5, "sources": [source("target", [0])]}, "cannot be a source name"),
        ({"ring_sizes": [36, 64], "target_num_labels": 5, "sources": [source("a", [0, 1], ["x"])]},
         "label_map has 2 entries for 1 classes"),
        ({"ring_sizes": [36, 64], "sources": [source("a", [0])]}, "target_num_labels is required"),
        ({"ring_sizes": [36, 64], "target_num_labels": 5, "sources": [source("a", [0], num_channels=4)]},
         "cannot be served"),
        ({"ring_sizes": [36, 64], "sources": [{"name": "a"}]}, "needs \\['class_names', 'label_map'\\]"),
        ({"target_mean": [0.5]}, "target_mean needs 3 values"),
        ({"target_std": [0.5, 0.0, 0.5]}, "target_std must be positive"),
        ({"target_num_labels": 3, "target_class_names": ["a", "b"]}, "target_class_names has 2 names"),
    ],
)
def test_invalid_configurations_are_refused_with_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        KiOPPromptConfig(**kwargs)
