"""Recurrent spiking networks trained by BPTT on the chip's own discrete dynamics.

The network: input spike trains (``network.frame_encoding``) -> one or more
recurrent populations of Lava CUBA LIF neurons -> a readout population
("out"). By default one population "rec" (recurrent onto itself with no
self-connections) and three projections ``in_rec``, ``rec_rec``, ``rec_out``;
in general (:meth:`RecurrentSpec.graph`) any named populations and projections
pre -> post between input, the populations and out (never into input, never
out of out; pre == post never connects a neuron to itself). Each projection is
a dense float (n_pre, n_post) array with a boolean mask of potential
connections (what DEEP R rewires; the diagonal of a pre == post projection is
always masked out). Each projection has one step of delay, as Lava's Sparse:
spikes of step t reach the post population at t + 1.

The float dynamics are the chip's update (DESIGN.md section 4,
``simulate.emulator.lif_step``) without integer truncation, per population
and step, in this order::

    a_t  = sum over projections q into the population of  z_pre(t-1) @ W_q
    u_t  = alpha_u * u_(t-1) + a_t          alpha_u = (4096 - (du + 1)) / 4096
    v^_t = alpha_v * v_(t-1) + u_t          alpha_v = (4096 - dv) / 4096
    z_t  = v^_t > 1                          (spiking population)
    v_t  = 0 where z_t else v^_t             (reset to zero)

Units: voltages and currents of a spiking population are in units of its
threshold ``vth << 6``, so the threshold is 1 and a float weight w is the
chip's ``W * 2**weight_exp * 64 / (vth * 64)``: deploying means
``W = w * vth / 2**weight_exp`` rounded (weight quantization is the only
difference between this model and the chip). Biases are zero everywhere.

Readout ("integrator"): non-spiking neurons, du = 4095 (u = a, no memory)
and dv = 0 (no leak) by default, so v at the last step of a sample is the sum
of its weighted input over the sample; the class is argmax of that final v
(ties to the lowest index). On a chip: the readout LIF with vth at its maximum
(131071) never spikes as long as |v| <= 131071 << 6, and a backend must return
the readout population's v after the sample's last step (sample of n frames:
step n * steps_per_frame - 1). Readout units are arbitrary (argmax does not
care): deploy with any common scale that keeps |v| below that bound.

Training: cross-entropy on the final readout v, BPTT through every step with
the LSNN pseudo-derivative ``dz/dv^ = gamma * max(0, 1 - |v^ - 1|)`` (gamma
0.3; in threshold units, this is the paper's gamma * max(0, 1 - |v - vth| / vth)),
the reset treated as a constant (dv/dv^ = 1 - z, as the LSNN code stops the
gradient through the reset), vectorised over the batch. Samples in a batch
are padded: a sample's loss reads v at its own last step, so padding steps
after it never affect its loss or gradients (causality), and no mask is
needed beyond that gather.

The non-spiking reference ("rate" kind): the same u, v filters and the same
projections, with z_t = tanh(v^_t) and no reset, trained by the same code.

Several populations: the rule above holds per population (each its own LifParams);
BPTT carries dL/dz_pre(t-1) += dL/du_post(t) @ W_q.T for every projection q. The
trace's ``z`` and ``vhat`` are the populations' side by side (population order), so
the firing-rate regulariser is over every recurrent neuron. The one-population
network does exactly the float32 operations it did before several populations
existed (tests/test_multipop.py checks it bit for bit against a frozen copy).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from deepr_neuro.errors import ConfigError
from deepr_neuro.network.frame_encoding import FrameEncoding

__all__ = ["DECAY_UNITY", "decay_from_tau", "tau_from_decay", "LifParams", "RecurrentSpec",
           "RecurrentModel", "ForwardTrace", "Adam", "TrainResult", "train_recurrent",
           "GAMMA", "PROJECTIONS", "RecPopulation", "RecProjection", "INPUT", "READOUT"]

DECAY_UNITY = 4096
DU_OFFSET = 1        # Lava's ds_offset: u decays by (4096 - (du + 1)) / 4096
DV_OFFSET = 0        # Lava's dm_offset
GAMMA = 0.3          # LSNN's dampening of the pseudo-derivative
PROJECTIONS = ("in_rec", "rec_rec", "rec_out")     # the one-population network's projections
KINDS = ("spiking", "rate")
INPUT, READOUT = "input", "out"                     # reserved population names


def decay_from_tau(tau_steps: float, offset: int) -> int:
    """Chip decay (0..4095) whose factor (4096 - (d + offset)) / 4096 is nearest exp(-1/tau).

    d = round(4096 * (1 - exp(-1 / tau))) - offset, clipped to 0..4095; tau in
    chip steps; tau = inf means no decay (factor 1: dv = 0; du cannot reach 1,
    its nearest is du = 0, factor 4095/4096), tau = 0 means forget at once
    (d = 4095).
    """
    if isinstance(tau_steps, bool) or not isinstance(tau_steps, (int, float, np.integer, np.floating)) \
            or math.isnan(tau_steps) or tau_steps < 0:
        raise ConfigError(f"tau: must be a number of chip steps >= 0 or inf (got {str(tau_steps)[:40]})")
    if tau_steps == 0:
        return 4095
    d = int(round(DECAY_UNITY * (1.0 - math.exp(-1.0 / float(tau_steps))))) - int(offset)
    return int(min(max(d, 0), 4095))


def tau_from_decay(d: int, offset: int) -> float:
    """Time constant (chip steps) of decay d: -1 / ln(factor); inf for factor 1, 0 for factor 0."""
    f = (DECAY_UNITY - (int(d) + int(offset))) / DECAY_UNITY
    if f <= 0:
        return 0.0
    if f >= 1:
        return math.inf
    return -1.0 / math.log(f)


@dataclass(frozen=True)
class LifParams:
    """One population's chip parameters (Lava units): du, dv 12-bit decays, vth 17-bit."""

    du: int
    dv: int
    vth: int = 1 << 10

    def __post_init__(self):
        for name, lo, hi in (("du", 0, 4095), ("dv", 0, 4095), ("vth", 1, 131071)):
            val = getattr(self, name)
            if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or not lo <= val <= hi:
                raise ConfigError(f"{name}: must be an integer in {lo}..{hi} (got {str(val)[:40]})")

    @property
    def alpha_u(self) -> float:
        return (DECAY_UNITY - (int(self.du) + DU_OFFSET)) / DECAY_UNITY

    @property
    def alpha_v(self) -> float:
        return (DECAY_UNITY - (int(self.dv) + DV_OFFSET)) / DECAY_UNITY

    @classmethod
    def from_tau(cls, tau_u: float, tau_v: float, vth: int = 1 << 10) -> "LifParams":
        return cls(du=decay_from_tau(tau_u, DU_OFFSET), dv=decay_from_tau(tau_v, DV_OFFSET), vth=vth)


@dataclass(frozen=True)
class RecPopulation:
    """One recurrent population: name, neurons, chip parameters."""

    name: str
    size: int
    lif: LifParams


@dataclass(frozen=True)
class RecProjection:
    """One projection pre -> post (``input``, a population's name, or ``out``)."""

    name: str
    pre: str
    post: str


_SINGLE_PROJECTIONS = (RecProjection("in_rec", INPUT, "rec"), RecProjection("rec_rec", "rec", "rec"),
                       RecProjection("rec_out", "rec", READOUT))


@dataclass(frozen=True)
class RecurrentSpec:
    """What the recurrent network is: sizes, neuron parameters, encoding, kind.

    ``n_in``, ``n_rec``, ``n_out``, ``rec``: the one-population network
    (population "rec", projections in_rec, rec_rec, rec_out). Several
    populations: build with :meth:`graph` (``populations``/``projections`` set;
    ``n_rec`` is then their total and ``rec`` the first one's parameters).
    """

    n_in: int
    n_rec: int
    n_out: int
    rec: LifParams = field(default_factory=lambda: LifParams.from_tau(4.0, 16.0))
    out: LifParams = field(default_factory=lambda: LifParams(du=4095, dv=0, vth=131071))
    encoding: FrameEncoding = field(default_factory=FrameEncoding)
    kind: str = "spiking"
    gamma: float = GAMMA
    populations: Tuple[RecPopulation, ...] = ()
    projections: Tuple[RecProjection, ...] = ()

    def __post_init__(self):
        for name in ("n_in", "n_rec", "n_out"):
            val = getattr(self, name)
            if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or not 1 <= val <= 1 << 16:
                raise ConfigError(f"{name}: must be an integer in 1..65536 (got {str(val)[:40]})")
        if self.kind not in KINDS:
            raise ConfigError(f"kind: {str(self.kind)[:40]!r} is not one of {', '.join(KINDS)}")
        if not (isinstance(self.gamma, (int, float)) and 0 < self.gamma < 10):
            raise ConfigError(f"gamma: must be a number in (0, 10) (got {str(self.gamma)[:40]})")
        single = (len(self.populations) == 1 and self.populations[0].name == "rec"
                  and tuple(self.projections) == _SINGLE_PROJECTIONS)
        if single or (not self.populations and not self.projections):
            # the one-population network (also after dataclasses.replace of n_rec or rec)
            object.__setattr__(self, "populations", (RecPopulation("rec", int(self.n_rec), self.rec),))
            object.__setattr__(self, "projections", _SINGLE_PROJECTIONS)
        else:
            object.__setattr__(self, "populations", tuple(self.populations))
            object.__setattr__(self, "projections", tuple(self.projections))
            self._check_graph()

    def _check_graph(self) -> None:
        pops, projs = self.populations, self.projections
        names = [p.name for p in pops]
        if not pops:
            raise ConfigError("populations: at least one recurrent population")
        for p in pops:
            if not isinstance(p, RecPopulation) or not isinstance(p.lif, LifParams):
                raise ConfigError(f"populations: expected RecPopulation(name, size, LifParams), got {str(p)[:80]}")
            if p.name in (INPUT, READOUT) or names.count(p.name) > 1:
                raise ConfigError(f"populations: name {p.name!r} is reserved or used twice")
            if isinstance(p.size, bool) or not isinstance(p.size, (int, np.integer)) or not 1 <= p.size <= 1 << 16:
                raise ConfigError(f"populations: {p.name!r} size must be an integer in 1..65536 (got {p.size})")
        if sum(p.size for p in pops) != self.n_rec or pops[0].lif != self.rec:
            raise ConfigError("n_rec / rec: must be the populations' total size and the first one's LifParams "
                              "(build the spec with RecurrentSpec.graph)")
        known = {INPUT, READOUT, *names}
        seen, pairs = set(), set()
        for q in projs:
            if not isinstance(q, RecProjection) or q.name in seen:
                raise ConfigError(f"projections: {str(q)[:80]} is not a RecProjection or its name is used twice")
            seen.add(q.name)
            if q.pre not in known or q.post not in known or q.post == INPUT or q.pre == READOUT:
                raise ConfigError(f"projections: {q.name!r} {q.pre!r} -> {q.post!r}: pre must be input or a "
                                  "population, post a population or out")
            if (q.pre, q.post) in pairs:
                raise ConfigError(f"projections: {q.name!r} repeats {q.pre!r} -> {q.post!r}")
            pairs.add((q.pre, q.post))
        for post in (*names, READOUT):
            if not any(q.post == post for q in projs):
                raise ConfigError(f"projections: nothing projects into {post!r}")

    @classmethod
    def graph(cls, n_in: int, n_out: int, populations, projections, **kw) -> "RecurrentSpec":
        """Several populations: ``populations`` [(name, size, LifParams)], ``projections``
        [(name, pre, post)]; ``kw``: out, encoding, kind, gamma."""
        pops = tuple(p if isinstance(p, RecPopulation) else RecPopulation(*p) for p in populations)
        projs = tuple(q if isinstance(q, RecProjection) else RecProjection(*q) for q in projections)
        if not pops:
            raise ConfigError("populations: at least one recurrent population")
        return cls(n_in=n_in, n_rec=int(sum(int(p.size) for p in pops)), n_out=n_out, rec=pops[0].lif,
                   populations=pops, projections=projs, **kw)

    # ------------------------------------------------------------ the graph
    @property
    def names(self) -> Tuple[str, ...]:
        """The recurrent populations' names, in order."""
        return tuple(p.name for p in self.populations)

    def size(self, name: str) -> int:
        if name == INPUT:
            return int(self.n_in)
        if name == READOUT:
            return int(self.n_out)
        return int(next(p.size for p in self.populations if p.name == name))

    def lif(self, name: str) -> LifParams:
        return self.out if name == READOUT else next(p.lif for p in self.populations if p.name == name)

    def projection_names(self) -> Tuple[str, ...]:
        return tuple(q.name for q in self.projections)

    def ends(self) -> Dict[str, Tuple[str, str]]:
        return {q.name: (q.pre, q.post) for q in self.projections}

    def offsets(self) -> Dict[str, Tuple[int, int]]:
        """Each population's slice of the side-by-side recurrent neurons (trace z, vhat)."""
        out, lo = {}, 0
        for p in self.populations:
            out[p.name] = (lo, lo + int(p.size))
            lo += int(p.size)
        return out

    def shapes(self) -> Dict[str, Tuple[int, int]]:
        return {q.name: (self.size(q.pre), self.size(q.post)) for q in self.projections}

    def potential(self) -> Dict[str, np.ndarray]:
        """Masks of potential connections: everything but the diagonal of a pre == post projection."""
        m = {k: np.ones(s, dtype=bool) for k, s in self.shapes().items()}
        for q in self.projections:
            if q.pre == q.post:
                np.fill_diagonal(m[q.name], False)
        return m


@dataclass
class ForwardTrace:
    """What BPTT needs from a forward pass, time-major: (T, B, n).

    ``zs``/``vhats``: per recurrent population; ``z``/``vhat``: every population's
    side by side (population order; the one population's own array when there is one)."""

    x: np.ndarray                      # input spikes as float (T, B, n_in)
    vhats: Dict[str, np.ndarray]       # recurrent v before reset, per population (T, B, n_p)
    zs: Dict[str, np.ndarray]          # recurrent output: spikes (0/1) or tanh rates, per population
    v_out: np.ndarray                  # readout v (T, B, n_out)
    last: np.ndarray                   # index of each sample's last step (B,)

    @staticmethod
    def _joined(parts: Dict[str, np.ndarray]) -> np.ndarray:
        vals = list(parts.values())
        return vals[0] if len(vals) == 1 else np.concatenate(vals, axis=2)

    @property
    def z(self) -> np.ndarray:
        return self._joined(self.zs)

    @property
    def vhat(self) -> np.ndarray:
        return self._joined(self.vhats)

    @property
    def logits(self) -> np.ndarray:
        return self.v_out[self.last, np.arange(len(self.last))]


class RecurrentModel:
    """Weights + masks of the projections, forward and BPTT (pure NumPy).

    ``weights[name]`` is a dense (n_pre, n_post) float array; ``masks[name]``
    a bool array of the same shape: where False the connection does not exist
    (its weight is held at 0 and receives no gradient). A rewiring engine may
    change masks and weights between steps (then call :meth:`apply_masks`).
    """

    def __init__(self, spec: RecurrentSpec, weights: Dict[str, np.ndarray],
                 masks: Optional[Dict[str, np.ndarray]] = None, dtype=np.float32):
        self.spec = spec
        self.dtype = np.dtype(dtype)
        shapes = spec.shapes()
        pot = spec.potential()
        names = spec.projection_names()
        if set(weights) != set(names):
            raise ConfigError(f"weights: expected projections {', '.join(names)}, got {sorted(weights)}")
        masks = pot if masks is None else masks
        self.weights, self.masks = {}, {}
        for k in names:
            w = np.asarray(weights[k])
            m = np.asarray(masks[k])
            if w.shape != shapes[k] or m.shape != shapes[k]:
                raise ConfigError(f"{k}: weights {w.shape} / mask {m.shape}, expected {shapes[k]} (n_pre, n_post)")
            if m.dtype != bool:
                raise ConfigError(f"{k}: mask must be boolean (got {m.dtype})")
            self.weights[k] = np.array(w, dtype=self.dtype)
            self.masks[k] = m & pot[k]
        self.apply_masks()

    @classmethod
    def init(cls, spec: RecurrentSpec, seed: int = 0, masks=None, dtype=np.float32,
             in_scale: float = 1.0, rec_scale: float = 1.0, out_scale: float = 1.0,
             scales: Optional[Dict[str, float]] = None) -> "RecurrentModel":
        """Gaussian weights: N(0, scale^2 / fan_in) per projection, fan_in counted over the mask.
        Scale: ``scales[name]`` if given, else in_scale (from the input), out_scale (into out)
        or rec_scale (between recurrent populations); drawn in projection order."""
        rng = np.random.RandomState(int(seed))
        pot = spec.potential() if masks is None else masks
        w = {}
        for q in spec.projections:
            sc = in_scale if q.pre == INPUT else out_scale if q.post == READOUT else rec_scale
            if scales and q.name in scales:
                sc = scales[q.name]
            m = pot[q.name]
            fan = max(float(m.sum(axis=0).mean()), 1.0)
            w[q.name] = rng.standard_normal(m.shape) * (sc / math.sqrt(fan))
        return cls(spec, w, masks, dtype)

    def apply_masks(self) -> None:
        for k in self.spec.projection_names():
            self.weights[k] *= self.masks[k]

    def effective(self) -> Dict[str, np.ndarray]:
        return {k: self.weights[k] * self.masks[k] for k in self.spec.projection_names()}

    # ------------------------------------------------------------ forward
    def forward(self, spikes: np.ndarray, n_steps: np.ndarray) -> ForwardTrace:
        """spikes (B, T, n_in) bool, n_steps (B,) valid steps per sample (>= 1)."""
        spec, dt = self.spec, self.dtype
        x = np.asarray(spikes)
        B, T, n_in = x.shape
        if n_in != spec.n_in:
            raise ConfigError(f"spikes: {n_in} input channels, the network has n_in = {spec.n_in}")
        L = np.asarray(n_steps, dtype=np.int64)
        if L.shape != (B,) or (B and (L.min() < 1 or L.max() > T)):
            raise ConfigError(f"n_steps: expected {B} step counts in 1..{T}")
        W = self.effective()
        aou, aov = dt.type(spec.out.alpha_u), dt.type(spec.out.alpha_v)
        xs = np.ascontiguousarray(x.transpose(1, 0, 2)).astype(dt)      # (T, B, n_in)
        C = spec.n_out
        pops = spec.populations
        vhat = {p.name: np.empty((T, B, p.size), dt) for p in pops}
        z = {p.name: np.empty((T, B, p.size), dt) for p in pops}
        v_out = np.empty((T, B, C), dt)
        uo = np.zeros((B, C), dt)
        vo = np.zeros((B, C), dt)
        one = dt.type(1)
        spiking = spec.kind == "spiking"
        # per population: the projections from recurrent populations (step by step) and
        # the input projections (they do not depend on the state: one product for all steps)
        rec_in = {p.name: [(q.pre, W[q.name]) for q in spec.projections if q.post == p.name and q.pre != INPUT]
                  for p in pops}
        ain = {}
        for p in pops:
            for q in spec.projections:
                if q.post == p.name and q.pre == INPUT and T > 1:
                    prod = (xs[:-1].reshape(-1, spec.n_in) @ W[q.name]).reshape(T - 1, B, p.size)
                    if p.name in ain:
                        ain[p.name] += prod
                    else:
                        ain[p.name] = prod
        state = {p.name: (np.zeros((B, p.size), dt), np.zeros((B, p.size), dt)) for p in pops}
        alphas = {p.name: (dt.type(p.lif.alpha_u), dt.type(p.lif.alpha_v)) for p in pops}
        for t in range(T):
            for p in pops:
                u, v = state[p.name]
                au, av = alphas[p.name]
                if t:
                    srcs = rec_in[p.name]
                    if srcs:
                        a = z[srcs[0][0]][t - 1] @ srcs[0][1]
                        for pre, Wq in srcs[1:]:
                            a += z[pre][t - 1] @ Wq
                        if p.name in ain:
                            a += ain[p.name][t - 1]
                    else:
                        a = ain[p.name][t - 1].copy()
                else:
                    a = np.zeros((B, p.size), dt)
                u = au * u + a
                vh = av * v + u
                vhat[p.name][t] = vh
                if spiking:
                    s = vh > one
                    z[p.name][t] = s
                    v = np.where(s, dt.type(0), vh)
                else:
                    z[p.name][t] = np.tanh(vh)
                    v = vh
                state[p.name] = (u, v)
        # the readout feeds nothing back: its input for all steps in one product
        ao = np.zeros((T, B, C), dt)
        if T > 1:
            first = True
            for q in spec.projections:
                if q.post != READOUT:
                    continue
                act = xs if q.pre == INPUT else z[q.pre]
                prod = (act[:-1].reshape(-1, act.shape[2]) @ W[q.name]).reshape(T - 1, B, C)
                if first:
                    ao[1:] = prod
                    first = False
                else:
                    ao[1:] += prod
        for t in range(T):
            uo = aou * uo + ao[t]
            vo = aov * vo + uo
            v_out[t] = vo
        return ForwardTrace(x=xs, vhats=vhat, zs=z, v_out=v_out, last=L - 1)

    # ------------------------------------------------------------ loss + BPTT
    def loss_and_grads(self, spikes: np.ndarray, n_steps: np.ndarray, y: np.ndarray,
                       rate_reg: float = 0.0, rate_target: float = 0.0):
        """Mean cross-entropy over the batch and its gradient per projection.

        Returns (loss, grads {name: (n_pre, n_post)}, info) with info holding
        the forward trace, accuracy, the mean firing rate and the seconds spent
        in forward and backward. ``rate_reg`` adds rate_reg * mean_n (r_n -
        rate_target)^2, r_n = neuron n's mean output over valid steps (LSNN's
        firing-rate regulariser; n over every recurrent population).
        """
        t0 = time.perf_counter()
        tr = self.forward(spikes, n_steps)
        t1 = time.perf_counter()
        loss, g_logits, acc = _cross_entropy(tr.logits.astype(np.float64), np.asarray(y))
        grads, rate, reg = self._backward(tr, g_logits.astype(self.dtype), rate_reg, rate_target)
        t2 = time.perf_counter()
        return loss + reg, grads, {"trace": tr, "accuracy": acc, "rate": rate, "ce": loss,
                                   "t_forward": t1 - t0, "t_backward": t2 - t1}

    def _backward(self, tr: ForwardTrace, g_logits: np.ndarray, rate_reg: float, rate_target: float):
        spec, dt = self.spec, self.dtype
        T, B = tr.v_out.shape[:2]
        n = spec.n_rec
        pops = spec.populations
        W = self.effective()
        aou, aov = dt.type(spec.out.alpha_u), dt.type(spec.out.alpha_v)
        gamma = dt.type(spec.gamma)
        valid = (np.arange(T)[:, None] <= tr.last[None, :])                # (T, B)
        # firing-rate regulariser on the recurrent outputs over valid steps
        steps = valid.sum(dtype=np.float64)
        rate_n = np.concatenate([(tr.zs[p.name] * valid[:, :, None]).sum(axis=(0, 1), dtype=np.float64)
                                 for p in pops]) / steps                    # (n,)
        reg = 0.0
        g_rate = None
        if rate_reg:
            diff = rate_n - rate_target
            reg = float(rate_reg * np.mean(diff ** 2))
            g_all = (rate_reg * 2.0 * diff / n / steps).astype(dt)          # dreg/dz per valid step
            g_rate = {p.name: g_all[lo:hi] for p, (lo, hi) in zip(pops, spec.offsets().values())}
        # readout: loss reads v_out at each sample's last step
        g_vo_at = np.zeros((T, B, spec.n_out), dt)
        g_vo_at[tr.last, np.arange(B)] = g_logits
        # readout first: nothing flows back into it, so its gradients for all
        # steps are known before the recurrent populations'
        guo_all = np.empty((T, B, spec.n_out), dt)
        guo = np.zeros((B, spec.n_out), dt)
        gvo = np.zeros((B, spec.n_out), dt)
        for t in range(T - 1, -1, -1):
            gvo_hat = gvo + g_vo_at[t]
            guo = gvo_hat + aou * guo
            gvo = aov * gvo_hat
            guo_all[t] = guo
        gW = {}
        acts = {INPUT: tr.x, **tr.zs}
        gz_out = {p.name: np.zeros((T, B, p.size), dt) for p in pops}   # dL/dz_t through the readout at t + 1
        assigned = set()
        for q in spec.projections:
            if q.post != READOUT:
                continue
            if T > 1:
                g1 = guo_all[1:].reshape(-1, spec.n_out)
                act = acts[q.pre]
                gW[q.name] = act[:-1].reshape(-1, act.shape[2]).T @ g1
                if q.pre != INPUT:
                    prod = (g1 @ W[q.name].T).reshape(T - 1, B, -1)
                    if q.pre in assigned:
                        gz_out[q.pre][:-1] += prod
                    else:
                        gz_out[q.pre][:-1] = prod
                        assigned.add(q.pre)
            else:
                gW[q.name] = np.zeros_like(self.weights[q.name])
        rec_out = {p.name: [(q.post, W[q.name]) for q in spec.projections
                            if q.pre == p.name and q.post != READOUT] for p in pops}
        gu_all = {p.name: np.empty((T, B, p.size), dt) for p in pops}
        gu = {p.name: np.zeros((B, p.size), dt) for p in pops}
        gv = {p.name: np.zeros((B, p.size), dt) for p in pops}    # dL/dv_t (post-reset), carried from t+1
        gz = {p.name: np.zeros((B, p.size), dt) for p in pops}    # dL/dz_t through the projections at t+1
        alphas = {p.name: (dt.type(p.lif.alpha_u), dt.type(p.lif.alpha_v)) for p in pops}
        spiking = spec.kind == "spiking"
        one = dt.type(1)
        for t in range(T - 1, -1, -1):
            for p in pops:
                k = p.name
                au, av = alphas[k]
                g = gz[k]
                g += gz_out[k][t]
                if g_rate is not None:
                    g += g_rate[k] * valid[t][:, None]
                vh = tr.vhats[k][t]
                zt = tr.zs[k][t]
                if spiking:
                    psi = gamma * np.maximum(dt.type(0), one - np.abs(vh - one))
                    gvh = gv[k] * (one - zt) + g * psi
                else:
                    gvh = gv[k] + g * (one - zt * zt)
                gu[k] = gvh + au * gu[k]
                gv[k] = av * gvh
                gu_all[k][t] = gu[k]
            if t:
                # projections delivering at t carry spikes of t - 1
                for p in pops:
                    outs = rec_out[p.name]
                    if outs:
                        g = gu[outs[0][0]] @ outs[0][1].T
                        for post, Wq in outs[1:]:
                            g += gu[post] @ Wq.T
                        gz[p.name] = g
                    else:
                        gz[p.name] = np.zeros((B, p.size), dt)
        for q in spec.projections:
            if q.post == READOUT:
                continue
            if T > 1:
                g1 = gu_all[q.post][1:].reshape(-1, spec.size(q.post))
                act = acts[q.pre]
                gW[q.name] = act[:-1].reshape(-1, act.shape[2]).T @ g1
            else:
                gW[q.name] = np.zeros_like(self.weights[q.name])
        for k in spec.projection_names():
            gW[k] *= self.masks[k]
        return gW, rate_n, reg

    # ------------------------------------------------------------ inference
    def predict(self, spikes: np.ndarray, n_steps: np.ndarray) -> np.ndarray:
        """Class per sample: argmax of the readout's final v (ties to the lowest index)."""
        return np.argmax(self.forward(spikes, n_steps).logits, axis=1)


def _cross_entropy(logits: np.ndarray, y: np.ndarray):
    B = len(y)
    m = logits.max(axis=1, keepdims=True)
    e = np.exp(logits - m)
    p = e / e.sum(axis=1, keepdims=True)
    loss = float(np.mean(np.log(e.sum(axis=1)) + m[:, 0] - logits[np.arange(B), y]))
    g = p.copy()
    g[np.arange(B), y] -= 1.0
    acc = float(np.mean(np.argmax(logits, axis=1) == y))
    return loss, g / B, acc


# ---------------------------------------------------------------- optimiser
class Adam:
    """Adam over the projections; entries outside the mask have their moments
    zeroed, so a connection (re)activated by rewiring starts with fresh moments."""

    def __init__(self, shapes: Dict[str, Tuple[int, int]], lr: float = 1e-3, b1: float = 0.9,
                 b2: float = 0.999, eps: float = 1e-8, dtype=np.float32):
        self.lr, self.b1, self.b2, self.eps = float(lr), b1, b2, eps
        self.m = {k: np.zeros(s, dtype) for k, s in shapes.items()}
        self.v = {k: np.zeros(s, dtype) for k, s in shapes.items()}
        self.t = 0

    def step(self, weights: Dict[str, np.ndarray], grads: Dict[str, np.ndarray],
             masks: Dict[str, np.ndarray]) -> None:
        self.t += 1
        c1 = 1.0 - self.b1 ** self.t
        c2 = 1.0 - self.b2 ** self.t
        for k, g in grads.items():
            m, v, mk = self.m[k], self.v[k], masks[k]
            m *= self.b1
            m += (1 - self.b1) * g
            v *= self.b2
            v += (1 - self.b2) * g * g
            m *= mk
            v *= mk
            weights[k] -= (self.lr / c1) * m / (np.sqrt(v / c2) + self.eps)
            weights[k] *= mk


# ---------------------------------------------------------------- training loop
@dataclass
class TrainResult:
    model: RecurrentModel
    history: List[dict]
    val_accuracy: float
    test_accuracy: float
    best_epoch: int = 0


def length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.RandomState) -> List[np.ndarray]:
    """Batches of similar length (less padding), in random order: samples are
    shuffled, sorted by length within windows of 20 batches, cut into batches,
    and the batches shuffled."""
    idx = rng.permutation(len(lengths))
    win = 20 * batch_size
    out = []
    for lo in range(0, len(idx), win):
        chunk = idx[lo:lo + win]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        out += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [out[i] for i in rng.permutation(len(out))]


def encode_batch(enc: FrameEncoding, x: np.ndarray, lengths: np.ndarray, idx: np.ndarray):
    """Spike trains of samples ``idx``, cut to the longest of them: (spikes, n_steps)."""
    L = lengths[idx]
    T = int(L.max())
    spikes = enc.encode(x[idx, :T], L)
    return spikes, L * int(enc.steps_per_frame)


def evaluate(model: RecurrentModel, x: np.ndarray, lengths: np.ndarray, y: np.ndarray,
             batch_size: int = 256) -> float:
    """Accuracy on a split (batches sorted by length)."""
    if len(y) == 0:
        return float("nan")
    order = np.argsort(lengths, kind="stable")
    correct = 0
    for lo in range(0, len(order), batch_size):
        idx = order[lo:lo + batch_size]
        s, n = encode_batch(model.spec.encoding, x, lengths, idx)
        correct += int((model.predict(s, n) == y[idx]).sum())
    return correct / len(y)


StepHook = Callable[[RecurrentModel, Dict[str, np.ndarray], Adam, int], None]


def train_recurrent(model: RecurrentModel, data, epochs: int = 5, lr: float = 3e-3,
                    batch_size: int = 32, seed: int = 0, rate_reg: float = 0.0,
                    rate_target: float = 0.02, clip_norm: Optional[float] = 10.0, step_hook: Optional[StepHook] = None,
                    log: Optional[Callable[[str], None]] = None, eval_test: bool = True,
                    keep_best: bool = True) -> TrainResult:
    """Adam on the cross-entropy, BPTT per batch, over ``data`` (a SequenceDataset).

    Gradients are scaled to a global norm of at most ``clip_norm`` (None: off),
    the usual guard of BPTT against exploding gradients.
    ``step_hook(model, grads, adam, step)`` runs after each optimiser step:
    the place a rewiring engine plugs in (it may change model.masks and
    model.weights; it should call model.apply_masks()).
    With ``keep_best`` the model ends with the weights and masks of the epoch
    of best validation accuracy (the first such epoch), and the test set is
    scored once, on that model.
    """
    rng = np.random.RandomState(int(seed))
    adam = Adam(model.spec.shapes(), lr=lr, dtype=model.dtype)
    history = []
    step = 0
    best = None
    for epoch in range(int(epochs)):
        t0 = time.perf_counter()
        tf = tb = 0.0
        losses, accs, rates = [], [], []
        for idx in length_batches(data.len_train, batch_size, rng):
            s, n = encode_batch(model.spec.encoding, data.x_train, data.len_train, idx)
            loss, grads, info = model.loss_and_grads(s, n, data.y_train[idx], rate_reg, rate_target)
            if clip_norm:
                norm = math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))
                if norm > clip_norm:
                    for g in grads.values():
                        g *= clip_norm / norm
            adam.step(model.weights, grads, model.masks)
            step += 1
            if step_hook is not None:
                step_hook(model, grads, adam, step)
            tf += info["t_forward"]
            tb += info["t_backward"]
            losses.append(loss)
            accs.append(info["accuracy"])
            rates.append(float(info["rate"].mean()))
        t_epoch = time.perf_counter() - t0
        val = evaluate(model, data.x_val, data.len_val, data.y_val)
        rec = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "train_acc": float(np.mean(accs)),
               "val_acc": val, "rate": float(np.mean(rates)), "seconds": t_epoch,
               "t_forward": tf, "t_backward": tb}
        history.append(rec)
        if keep_best and not math.isnan(val) and (best is None or val > best[0]):
            best = (val, epoch + 1, {k: w.copy() for k, w in model.weights.items()},
                    {k: m.copy() for k, m in model.masks.items()})
        if log is not None:
            log(f"epoch {epoch + 1}: loss {rec['loss']:.4f} train {rec['train_acc']:.3f} "
                f"val {val:.3f} rate {rec['rate']:.3f} {t_epoch:.1f}s "
                f"(fwd {tf:.1f}s, bwd {tb:.1f}s)")
    val_acc = history[-1]["val_acc"] if history else float("nan")
    best_epoch = len(history)
    if best is not None:
        val_acc, best_epoch = best[0], best[1]
        model.weights.update(best[2])
        model.masks.update(best[3])
    test = evaluate(model, data.x_test, data.len_test, data.y_test) if eval_test else float("nan")
    return TrainResult(model=model, history=history, val_accuracy=val_acc,
                       test_accuracy=test, best_epoch=best_epoch)
