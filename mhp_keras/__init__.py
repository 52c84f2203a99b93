"""mhp_keras: anomaly detection with multiple-hypotheses predictions (ConAD) in Keras 3."""

__version__ = "0.1.0"


def load_model(path: str):
    """Loads a saved `.keras` ConAD model (registering the custom classes first)."""
    import keras

    import mhp_keras.models  # noqa: F401  (registers ConAD and its layers with Keras)

    return keras.saving.load_model(path)
