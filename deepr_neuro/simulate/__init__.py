"""Simulator backends of the integer graph (emulator, Lava, Brian2) and cross-checks.

Importing the package registers the built-in backends (:mod:`.registry`).
"""
import deepr_neuro.simulate.registry  # noqa: F401  (fills backends' registry)
