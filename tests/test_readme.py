"""Every fenced block of README.md runs as written, in order, so the README cannot drift from the code.

The world the README presumes is built first: its models on the loopback Hub (``org/letters-classifier`` and
``org/fashion-classifier`` are the tests' small real models), its test sets, the other prompt it loads
(``user/digits-on-letters``), a user's plain module (``my_models/cnn.py`` with ``digit_cnn.safetensors``) and two
images. The one change made to the README's code is the budget: training commands get ``TINY_FLAGS`` appended and
Python snippets ``TINY_EDITS`` applied. What cannot run here is listed in ``NOT_RUN`` with the reason.
"""

import re
import runpy
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kiop_hf import KiOPModel, load_classifier
from kiop_hf.cli import main as cli

from .helpers import TINY_TRAINING, TinyCNN

ROOT = Path(__file__).parents[1]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
TINY_FLAGS = [f"--{key}" if value is True else f"--{key}={value}" for key, value in TINY_TRAINING.items()]
TINY_EDITS = {'preservation="BF")': 'preservation="BF", **TINY_TRAINING)'}
NOT_RUN = {  # a command's start: why this test does not run it
    "make demo": "the set-up itself (install, 8-minute reference zoo build, training); CI runs `make test`, which "
    "runs this test; the embedded job's summary is tested in test_cli.py",
    "make test": "the command that runs this test",
    "kiop-hf zoo": "builds the 8-minute reference zoo; test_zoo.py builds tiny specs with the same builder",
    "kiop-hf push outputs/kiop-prompt": "needs make demo's folder (the reference zoo); the same flags on a prompt "
    "naming local models are tested in test_hub.py",
}
NOT_CODE = {"bibtex": "a citation", "": "a file tree (the layout)"}

DIGIT_CNN = """
import torch.nn as nn


class DigitCNN(nn.Sequential):
    def __init__(self, num_classes):
        layers = nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes)
        super().__init__(*layers)
"""


def readme_blocks() -> list[tuple[str, str, int]]:
    text = (ROOT / "README.md").read_text()
    return [(m[1], m[2], text.count("\n", 0, m.start()) + 1) for m in FENCE.finditer(text)]


def shell_commands(block: str) -> list[list[str]]:
    """A bash block's commands, continuation lines joined and comments dropped."""
    return [shlex.split(line, comments=True) for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def publish_world(hub, timm_folder, transformers_folder, folder: Path) -> None:
    from datasets import ClassLabel, Dataset, DatasetDict, Features
    from datasets import Image as ImageFeature
    from safetensors.torch import save_file

    for repo, model in (("org/letters-classifier", transformers_folder), ("org/fashion-classifier", timm_folder)):
        hub.api.create_repo(repo, exist_ok=True)
        hub.api.upload_folder(folder_path=model, repo_id=repo)
    rng = np.random.default_rng(0)
    for repo, classes, mode in (("org/fashion-test-set", 10, "L"), ("org/letters-test-set", 12, "RGB")):
        shape = (32, 32) if mode == "L" else (32, 32, 3)
        images = [Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode) for _ in range(12)]
        features = Features({"image": ImageFeature(), "label": ClassLabel(num_classes=classes)})
        split = Dataset.from_dict({"image": images, "label": [i % classes for i in range(12)]}, features=features)
        DatasetDict(train=split, test=split).push_to_hub(repo)
    digits = load_classifier(TinyCNN(1, 10).eval(), image_size=32, mean=[0.5], std=[0.25])
    target = load_classifier("org/letters-classifier")
    KiOPModel.from_models(target, {"digits": digits}, image_size=32, ring_sizes=[36, 128]).push_to_hub(
        "user/digits-on-letters"
    )
    (folder / "my_models").mkdir()
    (folder / "my_models" / "__init__.py").write_text("")
    (folder / "my_models" / "cnn.py").write_text(DIGIT_CNN)
    from my_models.cnn import DigitCNN

    save_file(DigitCNN(10).state_dict(), folder / "digit_cnn.safetensors")
    for name in ("shirt.png", "shoe.png"):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), "L").save(folder / name)


def run_command(argv: list[str], ran: list[str]) -> None:
    line = shlex.join(argv)
    if any(line.startswith(start) for start in NOT_RUN):
        return
    if argv[0] == "kiop-hf":
        training = argv[1] == "train" and "--help" not in argv
        try:
            cli(argv[1:] + (TINY_FLAGS if training else []))
        except SystemExit as stop:
            assert stop.code in (0, None) and "--help" in argv, f"README command {line!r} stopped: {stop}"
    elif argv[:2] == ["python", "examples/classify_with_prompt.py"]:
        runpy.run_path(str(ROOT / argv[1]))["main"](argv[2:])
    else:
        raise AssertionError(f"README command {line!r}: this test does not know how to run it; add it to NOT_RUN")
    ran.append(line)


def test_every_fenced_block_of_the_readme_runs_as_written(
    hub, timm_folder, transformers_folder, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # the README's my_models package, for this test only
    try:
        publish_world(hub, timm_folder, transformers_folder, tmp_path)
        ran = run_readme()
    finally:
        for name in [name for name in sys.modules if name.split(".")[0] == "my_models"]:
            del sys.modules[name]
    capsys.readouterr()
    commands = [r for r in ran if not r.startswith("python block")]
    assert len(commands) >= 10 and sum(r.startswith("python block") for r in ran) == 4
    assert Path("outputs/fashion-prompt/model.safetensors").is_file() and Path("my-prompt/config.json").is_file()
    for tag in ("v1", "v2"):  # the Python snippet's tag and the push command's
        assert hub.api.model_info("user/fashion-on-letters", revision=tag).sha
    published = KiOPModel.from_pretrained("user/fashion-on-letters", revision="v2")
    assert published.config.source_names == ["fashion"]
    with torch.no_grad():
        assert published(torch.rand(2, 1, 32, 32), task="fashion").shape == (2, 10)


def run_readme() -> list[str]:
    """Runs the README's blocks in order in the current folder; returns what ran."""
    blocks = readme_blocks()
    for language, block, _ in blocks:  # config files first: commands above them in the README read them
        name = re.match(r"# (\S+\.yaml)", block)
        if language == "yaml" and name:
            Path(name[1]).write_text(block)
    namespace, ran = {"TINY_TRAINING": TINY_TRAINING}, []
    for language, block, line in blocks:
        if language in NOT_CODE:
            continue
        if language == "bash":
            for argv in shell_commands(block):
                run_command(argv, ran)
        elif language == "yaml":
            name = re.match(r"# (\S+\.yaml)", block)
            assert name, f"README.md:{line}: a yaml block names its file in its first line (# NAME.yaml)"
            run_command(["kiop-hf", "train", "--config", name[1]], ran)
        elif language == "python":
            for before, after in TINY_EDITS.items():
                block = block.replace(before, after)
            exec(compile(block, f"README.md:{line}", "exec"), namespace)  # noqa: S102 - our own README
            ran.append(f"python block at README.md:{line}")
        else:
            raise AssertionError(f"README.md:{line}: a {language!r} block; run it here or list it in NOT_CODE")
    return ran


@pytest.mark.parametrize("start", sorted(NOT_RUN))
def test_what_the_readme_test_skips_is_in_the_readme(start):
    bash = [block for language, block, _ in readme_blocks() if language == "bash"]
    commands = [shlex.join(argv) for block in bash for argv in shell_commands(block)]
    assert any(command.startswith(start) for command in commands), f"NOT_RUN lists {start!r}, which the README lacks"
