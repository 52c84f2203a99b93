"""The names of the mechanism diagnostics, defined once.

The training callback (`diagnostics.py`) logs them, and the studies' tables and the report's run
line read them back from history.csv and metrics.json. Those readers import no TensorFlow, so the
names live here, in a module that imports nothing.
"""

# In the order the tables and the report's run line show them.
NAMES = ("adv_grad_share", "head_diversity", "sharpness", "effective_heads", "head_sharpness_max")
