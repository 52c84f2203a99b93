"""mhp_keras: anomaly detection with multiple-hypotheses predictions (ConAD) in Keras 3.

`from mhp_keras import ConAD` gives the Keras model class (and `EvolvingWTA`, the callback of the
evolving WTA's schedule). TensorFlow is imported only when it is
first asked for, so the command lines can report flag mistakes without that cost.

The package follows the pipeline: `config` (settings) → `data` → `models` (the networks and the
`ConAD` Keras model) → `training` (the objective and the experiment loop) → `scoring` (the one
scorer, thresholds, metrics, reports) → `serving` (SavedModel export, `mhp-predict`), plus
`studies` (class tables, the ablation) and `cli` (the command lines' shared handling).
"""

from mhp_keras import _moved

__version__ = "0.1.0"
__all__ = ["ConAD", "EvolvingWTA", "build_conad", "load_model"]

_moved.install()  # old module paths (mhp_keras.export, ...) stay importable


def load_model(path: str):
    """Loads a saved `.keras` ConAD model (registering the custom classes first).

    A file that is not a whole `.keras` archive (cut short by a killed copy or a full disk) raises
    a ValueError that names it and says so; Keras alone says "File not found" of such a file.
    """
    import os
    import zipfile

    import keras

    import mhp_keras.models  # noqa: F401  (registers ConAD and its layers with Keras)

    path = os.fspath(path)
    if str(path).endswith(".keras") and os.path.isfile(path) and not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path} is not a complete .keras model file (it may have been cut short by a killed "
            "copy or a full disk): train again, or copy a complete model.keras."
        )
    try:
        return keras.saving.load_model(path)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ValueError(f"{path} cannot be read as a .keras model ({e}).") from None


def __getattr__(name: str):
    if name in ("ConAD", "build_conad"):
        import mhp_keras.models

        return getattr(mhp_keras.models, name)
    if name == "EvolvingWTA":
        from mhp_keras.training.evolving_wta import EvolvingWTA

        return EvolvingWTA
    raise AttributeError(f"module 'mhp_keras' has no attribute {name!r}")
