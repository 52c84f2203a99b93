"""mhp_keras: anomaly detection with multiple-hypotheses predictions (ConAD) in Keras 3."""

__version__ = "0.1.0"
