"""Settings: every config key's default, its validation, and the table that maps config keys
to `ConAD` arguments.
"""
