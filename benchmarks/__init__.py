"""Developer benchmarks for mhp_keras, kept outside the installed package.

They measure this code on the machine at hand and are run from the repository root, never imported
by the library: `python -m benchmarks.speed [--quick]`. See benchmarks/README.md.
"""
