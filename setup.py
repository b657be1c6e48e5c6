"""Packaging for vsd: vision self-distillation and dataset distillation."""
from pathlib import Path

from setuptools import find_packages, setup

_version = {}
exec((Path(__file__).parent / "vsd" / "version.py").read_text(), _version)

setup(
    name="vsd",
    version=_version["__version__"],
    description="Vision self-distillation and dataset distillation for timm and PyTorch",
    long_description=(Path(__file__).parent / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["vsd", "vsd.*"]),
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.2",
        "torchvision>=0.17",
        "timm>=1.0.27",
        "kornia>=0.7",
        "higher>=0.2.1",
        "scikit-learn>=1.2",
        "safetensors>=0.4",
        "pyyaml>=6.0",
        "tqdm>=4.60",
        "numpy>=1.23",
        "pillow>=9.0",
    ],
    extras_require={
        "dev": ["pytest>=7.0"],
        "photos": ["scikit-image>=0.21"],
        "plots": ["matplotlib>=3.5"],
    },
    include_package_data=True,
)
