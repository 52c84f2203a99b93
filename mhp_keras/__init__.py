"""mhp_keras: anomaly detection with multiple-hypotheses predictions (ConAD) in Keras 3.

`from mhp_keras import ConAD` gives the Keras model class. TensorFlow is imported only when it is
first asked for, so the command lines can report flag mistakes without that cost.
"""

__version__ = "0.1.0"
__all__ = ["ConAD", "load_model"]


def load_model(path: str):
    """Loads a saved `.keras` ConAD model (registering the custom classes first)."""
    import keras

    import mhp_keras.models  # noqa: F401  (registers ConAD and its layers with Keras)

    return keras.saving.load_model(path)


def __getattr__(name: str):
    if name == "ConAD":
        from mhp_keras.models import ConAD

        return ConAD
    raise AttributeError(f"module 'mhp_keras' has no attribute {name!r}")
