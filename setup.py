"""Installs mhp_keras and its runtime dependencies; the `test` extra adds the test tools."""

import pathlib

from setuptools import find_packages, setup

setup(
    name="mhp_keras",
    version="0.1.0",
    description="Anomaly detection with multiple-hypotheses predictions (ConAD) in Keras 3",
    long_description=pathlib.Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["mhp_keras", "mhp_keras.*", "configs"]),
    py_modules=["train_main"],
    install_requires=[
        # tensorflow-cpu is the same 2.21 without CUDA libraries; use `tensorflow` on GPU hosts.
        "tensorflow-cpu==2.21.*",
        "keras>=3.10,<4",
        "tensorboard>=2.21",
        "tensorflow-datasets>=4.9",
        "importlib_resources",  # tfds needs it to download and prepare data
        "numpy>=1.26",
        "scipy>=1.11",
        "scikit-learn>=1.4",
        "scikit-image>=0.22",
        "pillow>=10",
        "h5py>=3.10",
        "absl-py>=2.1",
        "ml_collections>=0.1.1",
        "matplotlib>=3.8",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-timeout>=2.3", "ruff>=0.6"],
    },
    entry_points={"console_scripts": ["mhp-predict=mhp_keras.predict:cli"]},
)
