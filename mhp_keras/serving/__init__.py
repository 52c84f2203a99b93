"""Serving: the TF Serving SavedModel export, and `mhp-predict`, which scores image files with
it.
"""
