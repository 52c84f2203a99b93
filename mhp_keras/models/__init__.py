"""Keras models of ConAD: encoder, multi-head decoder, discriminator and the trainable `ConAD`."""

from mhp_keras.models.conad import ConAD, build_conad

__all__ = ["ConAD", "build_conad"]
