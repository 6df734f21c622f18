"""The built-in backends, registered by name (no folder scanning).

``emulator`` (NumPy, bit-exact, fast), ``lava`` (Lava's fixed_pt simulator),
``brian2`` (integer-exact Brian2 model) and ``brian2-float`` (its
continuous-time reading, not exact). Imported by the ``deepr_neuro.simulate``
package, so :func:`deepr_neuro.simulate.backends.get_backend` knows them
whenever the package is imported; importing these modules does not import
Lava or Brian2 (they are imported when a backend runs).
"""
from __future__ import annotations

from typing import Optional

from deepr_neuro.errors import BackendError
from deepr_neuro.simulate.backends import Backend, register
from deepr_neuro.simulate.brian2_backend import Brian2Backend
from deepr_neuro.simulate.emulator import EmulatorBackend
from deepr_neuro.simulate.lava_backend import LavaBackend, lava_unavailable_reason


def unavailable_reason(name: str) -> Optional[str]:
    """Why backend ``name`` cannot run here (None if it can, or is unknown)."""
    if name == "lava":
        return lava_unavailable_reason()
    return None


def _lava() -> Backend:
    """Lava only where it imports; elsewhere a BackendError naming the Python and the fix."""
    reason = lava_unavailable_reason()
    if reason is not None:
        raise BackendError(reason)
    return LavaBackend()


def _brian2() -> Backend:
    return Brian2Backend(mode="integer")


def _brian2_float() -> Backend:
    return Brian2Backend(mode="float")


register("emulator", EmulatorBackend)
register("lava", _lava)
register("brian2", _brian2)
register("brian2-float", _brian2_float)
