"""Datasets for the one-class protocol; `load_data(config)` picks the source named by data.name."""

from mhp_keras.data.base import ImageSet, OneClassData
from mhp_keras.data.registry import DATASETS, load_data

__all__ = ["DATASETS", "ImageSet", "OneClassData", "load_data"]
