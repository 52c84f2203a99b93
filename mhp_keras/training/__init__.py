"""Training: the objective (WTA, KL, adversarial terms), the experiment loop, callbacks,
recovery, health warnings, the XLA choice and tf.distribute.
"""
