"""Scoring: the one scorer (whole or tiled images), anomaly maps, thresholds and decisions,
metrics, evaluation and reports.
"""
