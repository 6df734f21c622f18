"""One root error class for the toolkit.

User mistakes surface as a :class:`DeeprError` subclass with a message that
names the file, the field and the fix, never as a traceback from deep inside.
Each class also inherits a builtin so ``except ValueError`` keeps working.
"""
from __future__ import annotations


class DeeprError(Exception):
    """Root of every error deepr-neuro raises on purpose."""


class ConfigError(DeeprError, ValueError):
    """A profile, model spec or command-line value is invalid."""


class DataError(DeeprError, ValueError):
    """A data set is missing, corrupt or of the wrong shape."""


class BudgetError(DeeprError, ValueError):
    """The network does not fit the hardware profile."""


class BundleError(DeeprError, ValueError):
    """A run directory / bundle is missing, incomplete or of another version."""


class BackendError(DeeprError, RuntimeError):
    """A simulator backend failed or is not available."""


class InvariantError(DeeprError, RuntimeError):
    """A promise the trainer makes (exact per-core budgets, capacities, axon
    limits) was found broken. Not the caller's bad value, so a RuntimeError
    rather than a ValueError; never a bare AssertionError, which ``python -O``
    callers and the CLI's error handling would treat as a crash."""
