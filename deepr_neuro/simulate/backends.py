"""One small interface for every simulator of an :class:`IntegerNetwork`.

Backends are registered explicitly (no folder scanning): ``emulator`` (NumPy,
bit-exact, fast), ``lava`` (Lava's fixed_pt simulator) and ``brian2``
(integer-exact Brian2 model; ``brian2-float`` is the continuous-time reading).
Lava / Brian2 are imported only when their backend is created. Lava is
optional (lava-nc 0.10.0 needs numpy <2, so it is absent on Python 3.13+):
:func:`unavailable_reason` says why a backend cannot be created here, and
``get_backend("lava")`` raises that as a :class:`BackendError`.

Every backend's ``run`` follows the semantics in
:mod:`deepr_neuro.network.integer_network`: each sample starts from zero state and
runs ``steps`` steps.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import numpy as np

from deepr_neuro.errors import BackendError
from deepr_neuro.network.integer_network import IntegerNetwork


@dataclass
class SimResult:
    """What a backend returns for ``n`` samples.

    counts[l]: int32 (n_samples, n_l) spikes per neuron of layer l (l = 0 is the
    input layer). spikes[l]: bool (n_samples, steps, n_l), only when the run was
    asked to record full spike trains (``record_spikes=True``), else None.
    """

    counts: List[np.ndarray]
    spikes: Optional[List[np.ndarray]] = None
    steps: int = 0

    @property
    def output_counts(self) -> np.ndarray:
        return self.counts[-1]

    def predictions(self) -> np.ndarray:
        """Class = output neuron with most spikes; ties go to the lowest index."""
        return np.argmax(self.output_counts, axis=1)


class Backend:
    """Base class: ``run(net, x_uint8, steps, record_spikes)`` -> SimResult."""

    name = "base"

    def run(self, net: IntegerNetwork, x_uint8: np.ndarray, steps: int,
            record_spikes: bool = False) -> SimResult:  # pragma: no cover
        raise NotImplementedError


_REGISTRY: Dict[str, Callable[[], Backend]] = {}


def register(name: str, factory: Callable[[], Backend]) -> None:
    _REGISTRY[name] = factory


def available() -> List[str]:
    return sorted(_REGISTRY)


def get_backend(name: str) -> Backend:
    if name not in _REGISTRY:
        raise BackendError(
            f"unknown backend {str(name)[:100]!r}; choose one of: {', '.join(available())}")
    return _REGISTRY[name]()


@functools.lru_cache(maxsize=None)
def lava_unavailable_reason() -> Optional[str]:
    """None when Lava imports in this interpreter, else why not and the fix (cached)."""
    from deepr_neuro.simulate.lava_backend import _import_lava
    try:
        _import_lava()
    except BackendError as exc:
        return str(exc)
    return None


def unavailable_reason(name: str) -> Optional[str]:
    """Why backend ``name`` cannot run here (None if it can, or is unknown)."""
    if name == "lava":
        return lava_unavailable_reason()
    return None


def _emulator() -> Backend:
    from deepr_neuro.simulate.emulator import EmulatorBackend
    return EmulatorBackend()


def _lava() -> Backend:
    reason = lava_unavailable_reason()
    if reason is not None:
        raise BackendError(reason)
    from deepr_neuro.simulate.lava_backend import LavaBackend
    return LavaBackend()


def _brian2() -> Backend:
    from deepr_neuro.simulate.brian2_backend import Brian2Backend
    return Brian2Backend(mode="integer")


def _brian2_float() -> Backend:
    from deepr_neuro.simulate.brian2_backend import Brian2Backend
    return Brian2Backend(mode="float")


register("emulator", _emulator)
register("lava", _lava)
register("brian2", _brian2)
register("brian2-float", _brian2_float)
