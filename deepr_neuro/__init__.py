"""deepr-neuro: DEEP R training under neuromorphic chip budgets, deployed to Lava.

Importing the package is cheap: Lava and Brian2 are imported only by the
modules that run them (``lava_backend``, ``brian2_backend``).
"""
__version__ = "0.1.0"

from deepr_neuro.errors import DeeprError  # noqa: F401
