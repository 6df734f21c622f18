"""Real-valued frames -> input spike trains: the one encoding every backend reproduces.

Temporal data (MFCC frames, image rows) enters a chip as spikes. The toolkit,
not the chip, turns frames into spikes, in two steps that are both plain data:

1. **Quantize** (the only float step, done once by the toolkit): each feature of
   a frame, already normalised (``training.sequences`` z-scores MFCCs with the
   training set's statistics; image rows are pixel / 255), becomes an integer
   level ``q = clip(rint(x * scale), 0, steps_per_frame)``. With ``signed``, a
   feature is split into an ON channel (x >= 0, level from x) and an OFF
   channel (level from -x), so channel ``2*i`` is ON and ``2*i + 1`` is OFF of
   feature i; without it, negative values clip to level 0.
2. **Spike** (pure integers, what a backend replays): a frame is held for
   ``steps_per_frame`` (S) chip steps; a channel at level q spikes at step
   ``k`` (0..S-1) of the frame iff ``floor((k+1)*q/S) > floor(k*q/S)``: exactly
   q spikes, evenly spread (Bresenham), the same in every frame, nothing
   carried between frames. Level S spikes at every step, level 0 never.

A sample of n frames is ``n * S`` chip steps long. The spikes are those of the
graph's input population at each step (Lava: a ``RingBuffer`` source process
sending row t at step t; Brian2: a ``SpikeGeneratorGroup``; emulator: the
array itself). As for every projection, input spikes at step t reach the
recurrent population at step t + 1.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deepr_neuro.errors import ConfigError

__all__ = ["FrameEncoding", "level_spikes", "MAX_STEPS_PER_FRAME"]

MAX_STEPS_PER_FRAME = 64  # more chip steps per frame buys resolution no data set here needs


@dataclass(frozen=True)
class FrameEncoding:
    """Integer parameters of the frame encoding (see the module docstring).

    ``scale`` is the one float: how many levels one unit of a normalised feature
    is worth; it only enters the quantize step, never the spike step.
    """

    steps_per_frame: int = 4
    scale: float = 2.0
    signed: bool = True

    def __post_init__(self):
        s = self.steps_per_frame
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 1 <= s <= MAX_STEPS_PER_FRAME:
            raise ConfigError(f"encoding.steps_per_frame: must be an integer in 1..{MAX_STEPS_PER_FRAME} "
                              f"(got {str(s)[:40]})")
        sc = self.scale
        if isinstance(sc, bool) or not isinstance(sc, (int, float, np.floating, np.integer)) \
                or not np.isfinite(sc) or not sc > 0:
            raise ConfigError(f"encoding.scale: must be a finite number > 0 (got {str(sc)[:40]})")
        if not isinstance(self.signed, (bool, np.bool_)):
            raise ConfigError(f"encoding.signed: must be true or false (got {str(self.signed)[:40]})")

    def n_channels(self, n_features: int) -> int:
        return 2 * int(n_features) if self.signed else int(n_features)

    def quantize(self, frames: np.ndarray) -> np.ndarray:
        """(n, T, F) float frames -> (n, T, channels) int16 levels 0..steps_per_frame."""
        x = np.asarray(frames)
        if x.ndim != 3:
            raise ConfigError(f"frames: expected shape (n, T, features), got {np.shape(frames)}")
        if x.size and not np.all(np.isfinite(x)):
            raise ConfigError("frames: NaN or infinite values; normalise the data first")
        x = x.astype(np.float64)
        S = int(self.steps_per_frame)
        sc = float(self.scale)
        if self.signed:
            on = np.clip(np.rint(x * sc), 0, S)
            off = np.clip(np.rint(-x * sc), 0, S)
            q = np.stack([on, off], axis=-1).reshape(x.shape[0], x.shape[1], 2 * x.shape[2])
        else:
            q = np.clip(np.rint(x * sc), 0, S)
        return q.astype(np.int16)

    def spikes(self, levels: np.ndarray, lengths=None) -> np.ndarray:
        """Integer levels (n, T, C) -> bool spike trains (n, T * steps_per_frame, C);
        steps of frames at or beyond ``lengths[i]`` (padding) stay silent."""
        return level_spikes(levels, int(self.steps_per_frame), lengths)

    def encode(self, frames: np.ndarray, lengths=None) -> np.ndarray:
        """Frames -> spike trains: ``spikes(quantize(frames))``."""
        return self.spikes(self.quantize(frames), lengths)

    def info(self) -> dict:
        return {"kind": "frame-rate", "steps_per_frame": int(self.steps_per_frame),
                "scale": float(self.scale), "signed": bool(self.signed),
                "rule": "q = clip(rint(x*scale), 0, S) (ON/OFF channels 2i, 2i+1 if signed); "
                        "spike at step k of a frame iff floor((k+1)q/S) > floor(kq/S)"}


def level_spikes(levels: np.ndarray, steps_per_frame: int, lengths=None) -> np.ndarray:
    """Pure integer rule: level q of a frame -> q evenly spread spikes in S steps.

    (n, T, C) integer levels in 0..S -> (n, T*S, C) bool. ``lengths`` (n,)
    frames per sample: frames from ``lengths[i]`` on are padding and silent.
    """
    q = np.asarray(levels)
    S = int(steps_per_frame)
    if q.ndim != 3:
        raise ConfigError(f"levels: expected shape (n, T, channels), got {np.shape(levels)}")
    if q.size and (q.dtype.kind not in "iu" or q.min() < 0 or q.max() > S):
        raise ConfigError(f"levels: expected integers in 0..{S} (steps_per_frame), "
                          f"got {q.dtype} in [{q.min()}, {q.max()}]")
    q = q.astype(np.int64)
    n, T, C = q.shape
    k = np.arange(S, dtype=np.int64)[None, None, :, None]                # (1,1,S,1)
    fire = ((k + 1) * q[:, :, None, :]) // S > (k * q[:, :, None, :]) // S  # (n,T,S,C)
    if lengths is not None:
        L = np.asarray(lengths, dtype=np.int64)
        if L.shape != (n,) or (L.size and (L.min() < 0 or L.max() > T)):
            raise ConfigError(f"lengths: expected {n} frame counts in 0..{T}, got shape {L.shape}")
        fire &= (np.arange(T)[None, :] < L[:, None])[:, :, None, None]
    return fire.reshape(n, T * S, C)
