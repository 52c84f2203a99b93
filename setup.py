"""Installs mhp_keras and its runtime dependencies; the `test` extra adds the test tools."""

import pathlib

from setuptools import find_packages, setup

setup(
    name="mhp_keras",
    version="0.1.0",
    description="Anomaly detection with multiple-hypotheses predictions (ConAD) in Keras 3",
    long_description=pathlib.Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",  # datetime.UTC (export metadata)
    packages=find_packages(include=["mhp_keras", "mhp_keras.*", "configs"]),
    py_modules=["train_main"],
    install_requires=[
        # One TensorFlow distribution for every host: `tensorflow` runs on the CPU, and on GPUs with
        # the CUDA libraries of the `gpu` extra (never also `tensorflow-cpu`, which would be a
        # second copy of the same package).
        "tensorflow==2.21.*",
        # The tested minor: the multi-worker log workaround in ConAD._update_metrics depends on
        # how this Keras reduces logs (tests/test_model_settings.py checks the flag it reads).
        "keras>=3.15,<4",  # 3.15.1, the newest published, is tested; nothing private relied on
        "tensorboard>=2.21",
        "tensorflow-datasets>=4.9",
        "importlib_resources",  # tfds needs it to download and prepare data
        "numpy>=1.26",
        "scipy>=1.11",
        "scikit-learn>=1.4",
        "scikit-image>=0.22",
        "pillow>=10",
        "tifffile>=2023.1",  # 16-bit colour TIFF, which Pillow reads as 8 bit (data/image_files.py)
        # tifffile's codecs for compressed (LZW, JPEG, ...) 16-bit colour TIFF, as Pillow read them.
        "imagecodecs>=2024.1",
        "h5py>=3.10",
        "absl-py>=2.1",
        "ml_collections>=0.1.1",
        "matplotlib>=3.8",
    ],
    extras_require={
        "gpu": ["tensorflow[and-cuda]==2.21.*"],
        "test": ["pytest>=8", "pytest-timeout>=2.3", "pytest-xdist>=3.5", "ruff>=0.6"],
    },
    entry_points={
        "console_scripts": ["mhp-predict=mhp_keras.serving.predict:cli", "mhp-train=train_main:cli"]
    },
)
