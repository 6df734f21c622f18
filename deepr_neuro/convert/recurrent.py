"""A trained recurrent spiking network -> the integer graph a chip runs.

The float network (``training.recurrent``) is already the chip's update in
threshold units, so deployment is weight quantization and nothing else:

* every projection into a spiking population of trained threshold ``vth``
  (``in_rec`` and ``rec_rec`` of one population; with several populations each
  population has its own threshold scaling over the projections into it): ``W = round(w * vth' / 2**weight_exp)`` with the chip threshold
  ``vth' = vth * k`` (k in [1, 4), :func:`rec_threshold`: least squared
  rounding error, so the largest weights use the 8-bit range rather than half
  of it), so that ``W * 2**weight_exp * 64`` (what one spike adds to u) over
  ``vth' * 64`` (the threshold) is ``w``: below threshold the LIF is linear, so
  scaling the threshold and every weight into the population together keeps
  the float network's dynamics;
* every projection into the non-spiking readout (``rec_out``): the readout's units are free
  (argmax does not care), so ``vth`` is replaced by a scale ``c`` chosen from
  the training data so that the largest |v| the float readout reaches on it,
  times ``64 * c``, is half the readout threshold ``131071 << 6``: the readout
  (du, dv from the bundle, vth at its maximum 131071) never spikes and its v
  stays far from Lava's 24-bit clip.

``weight_exp`` per projection is the smallest exponent (within the profile's
range) that keeps every ``|W|`` within the ``num_weight_bits`` grid; ``W`` is
rounded to that grid (multiples of Lava's truncation step, sign mode of the
rounded weights), so Lava's own truncation leaves it unchanged. Biases are 0.
The input population is a spike source (``input_kind="spikes"``) replaying
``FrameEncoding`` trains; the readout rule is ``final_v``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple

import numpy as np

from deepr_neuro.errors import ConfigError
from deepr_neuro.network.fixed_point import LAVA_LIMITS, sign_mode_of, weight_range, weight_step
from deepr_neuro.network.frame_encoding import FrameEncoding
from deepr_neuro.network.integer_network import IntegerGraph, NeuronParams, Population, Projection
from deepr_neuro.training.recurrent import INPUT, READOUT

__all__ = ["READOUT_VTH", "quantize_projection", "readout_scale", "deploy_recurrent", "Deployed",
           "dequantized_weights", "rec_threshold"]

READOUT_VTH = LAVA_LIMITS["vth"][1]      # 131071: the readout never reaches it
READOUT_HEADROOM = 0.5                   # float readout peak maps to half the readout threshold


def quantize_projection(w: np.ndarray, scale: float, num_weight_bits: int,
                        exp_range: Tuple[int, int] = (-7, 7)) -> Tuple[np.ndarray, int, Dict]:
    """Float weights ``w`` -> (int32 chip weights, weight_exp, info).

    ``W = round(w * scale / 2**weight_exp)`` on the ``num_weight_bits`` grid
    (multiples of Lava's truncation step), with the smallest weight_exp in
    ``exp_range`` that keeps max |W| inside the grid's range; weights beyond
    it at the top exponent are clipped (counted in ``info['clipped']``).
    """
    w = np.asarray(w, dtype=np.float64)
    if w.size and not np.all(np.isfinite(w)):
        raise ConfigError("weights: NaN or infinite trained weights; train the run again with a smaller --lr")
    if not (isinstance(scale, (int, float, np.floating, np.integer)) and np.isfinite(scale) and scale > 0):
        raise ConfigError(f"scale: must be a finite number > 0 (got {str(scale)[:40]})")
    lo_e, hi_e = int(exp_range[0]), int(exp_range[1])
    if lo_e > hi_e:
        raise ConfigError(f"weight_exp range: {lo_e} > {hi_e}")
    x = w * float(scale)
    step = weight_step(num_weight_bits, "mixed")
    lo, hi = weight_range(num_weight_bits, "mixed")
    # per sign, the largest magnitude the grid holds (1-bit mixed weights are only -256 and 0)
    need = [(float(x.max()), hi), (float(-x.min()), -lo)] if x.size else []
    need = [(peak, lim) for peak, lim in need if peak > 0 and lim > 0]
    e = lo_e
    for peak, lim in need:
        e = max(e, min(max(int(math.ceil(math.log2(peak) - math.log2(lim))), lo_e), hi_e))  # no 0 for subnormals
    while e < hi_e and any(peak / 2.0 ** e > lim for peak, lim in need):   # guard the float ceil
        e += 1
    q = np.rint(x / 2.0 ** e / step) * step
    clipped = int(np.sum((q < lo) | (q > hi)))
    q = np.clip(q, lo, hi).astype(np.int64)
    mode = sign_mode_of(q)                  # the rounded weights decide Lava's sign mode
    if mode != "mixed":
        lo_m, hi_m = weight_range(num_weight_bits, mode)
        clipped += int(np.sum((q < lo_m) | (q > hi_m)))
        q = np.clip(q, lo_m, hi_m)
        assert not np.any(q % weight_step(num_weight_bits, mode))
    err = (q * 2.0 ** e - x) / float(scale) if x.size else np.zeros(0)
    info = {"weight_exp": e, "clipped": clipped, "sign_mode": mode,
            "max_abs_error": float(np.max(np.abs(err))) if err.size else 0.0,
            "zeroed": int(np.sum((q == 0) & (w != 0)))}
    return q.astype(np.int32), e, info


def dequantized_weights(qw: np.ndarray, weight_exp: int, scale: float) -> np.ndarray:
    """The float weight a chip weight stands for: ``W * 2**weight_exp / scale``."""
    return np.asarray(qw, np.float64) * 2.0 ** int(weight_exp) / float(scale)


def _float_peak(model, x, lengths, batch_size: int = 128) -> float:
    """Largest |v| of the float readout over every step of every sample (its own length)."""
    from deepr_neuro.training.recurrent import encode_batch

    order = np.argsort(lengths, kind="stable")
    peak = 0.0
    for lo in range(0, len(order), batch_size):
        idx = order[lo:lo + batch_size]
        s, n = encode_batch(model.spec.encoding, x, lengths, idx)
        v = model.forward(s, n).v_out                      # (T, B, C)
        valid = np.arange(v.shape[0])[:, None] < np.asarray(n)[None, :]
        peak = max(peak, float(np.max(np.abs(v) * valid[:, :, None])) if v.size else 0.0)
    return peak


def readout_scale(model, x, lengths) -> Tuple[float, float]:
    """(c, float peak): c maps the float readout's peak |v| on (x, lengths) to
    READOUT_HEADROOM of the readout threshold ``131071 << 6``."""
    peak = _float_peak(model, x, lengths)
    if peak <= 0:
        return 1.0, peak
    return READOUT_HEADROOM * READOUT_VTH / peak, peak


REC_VTH_MAX = READOUT_VTH >> 3     # v stays 8x below Lava's 24-bit clip at the threshold
REC_VTH_CANDIDATES = 64            # thresholds tried: vth * 2**(i/32), i < 64 (up to 4x)


def rec_threshold(W: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray], vth: int, num_weight_bits: int,
                  exp_range: Tuple[int, int], names: Tuple[str, ...] = ("in_rec", "rec_rec")) -> Tuple[int, Dict]:
    """The chip threshold of a recurrent population: ``vth * k`` (k in [1, 4)) whose
    quantization of the projections ``names`` into it (in_rec and rec_rec of one population;
    all at scale ``vth * k``) has the smallest summed squared error in threshold units. Exact for the float network: below threshold the
    integer LIF is linear, so v, u, every weight into the population and the threshold
    scale together; only the rounding of the weights (and of the decays) changes. The
    power-of-two weight_exp alone leaves the largest weight between half and all of the
    8-bit range; a threshold between vth and 4 vth lets it use (nearly) all of it.
    Ties keep the smaller threshold (an exactly representable network keeps ``vth``)."""
    ws = [np.asarray(W[n], np.float64)[np.asarray(masks[n], bool)] for n in names]

    def sq_error(t: int) -> float:
        total = 0.0
        for w in ws:
            if w.size:
                q, e, _ = quantize_projection(w, float(t), num_weight_bits, exp_range)
                total += float(np.sum((dequantized_weights(q, e, float(t)) - w) ** 2))
        return total

    base = sq_error(vth)
    best, best_err = vth, base
    if vth < REC_VTH_MAX:
        for i in range(1, REC_VTH_CANDIDATES):
            t = min(int(round(vth * 2.0 ** (i / 32))), REC_VTH_MAX)
            err = sq_error(t)
            if err < best_err:
                best, best_err = t, err
    return best, {"rec_vth": int(best), "rec_vth_trained": int(vth),
                  "rec_weight_sq_error": best_err, "rec_weight_sq_error_at_trained_vth": base}


@dataclass
class Deployed:
    graph: IntegerGraph
    info: Dict
    scales: Dict[str, float]          # projection -> scale used in W = round(w * scale / 2**e)


def deploy_recurrent(model, num_weight_bits: int, exp_range: Tuple[int, int], x_cal, len_cal,
                     cores: Optional[Mapping[str, np.ndarray]] = None) -> Deployed:
    """The integer graph of a trained :class:`~deepr_neuro.training.recurrent.RecurrentModel`.

    ``x_cal``, ``len_cal``: training frames that set the readout scale (never
    the test set). ``cores``: population -> core id per neuron (the trained
    placement), kept on the graph.
    """
    spec = model.spec
    if spec.kind != "spiking":
        raise ConfigError(f"model kind {spec.kind!r}: only a spiking recurrent network deploys to a chip "
                          "(the 'rate' kind is the non-spiking reference)")
    c_out, peak = readout_scale(model, x_cal, len_cal)
    W = model.effective()
    scales, vths, per_pop = {}, {}, {}
    for p in spec.populations:
        into = tuple(q.name for q in spec.projections if q.post == p.name)
        vths[p.name], per_pop[p.name] = rec_threshold(W, model.masks, int(p.lif.vth), num_weight_bits, exp_range,
                                                      names=into)
        scales.update({k: float(vths[p.name]) for k in into})
    scales.update({q.name: c_out for q in spec.projections if q.post == READOUT})
    cores = dict(cores or {})

    def zeros(n):
        return np.zeros(n, np.int32)
    pops = (
        Population(INPUT, NeuronParams(vth=0, du=0, dv=0, bias_exp=0, bias_mant=zeros(spec.n_in)), cores.get(INPUT)),
        *(Population(p.name, NeuronParams(vth=int(vths[p.name]), du=int(p.lif.du), dv=int(p.lif.dv),
                                          bias_exp=0, bias_mant=zeros(p.size)), cores.get(p.name))
          for p in spec.populations),
        Population(READOUT, NeuronParams(vth=READOUT_VTH, du=int(spec.out.du), dv=int(spec.out.dv),
                                         bias_exp=0, bias_mant=zeros(spec.n_out)), cores.get(READOUT)),
    )
    projs, per = [], {}
    for q in spec.projections:
        name = q.name
        mask = model.masks[name]
        pre_idx, post_idx = np.nonzero(mask)                     # dense (n_pre, n_post)
        order = np.lexsort((pre_idx, post_idx))                  # sorted by (row=post, col=pre)
        rows, cols = post_idx[order].astype(np.int32), pre_idx[order].astype(np.int32)
        qw, e, info = quantize_projection(W[name][cols, rows], scales[name], num_weight_bits, exp_range)
        projs.append(Projection(name=name, pre=q.pre, post=q.post, rows=rows, cols=cols,
                                weights=qw, weight_exp=int(e), num_weight_bits=int(num_weight_bits)))
        per[name] = dict(info, scale=scales[name], synapses=int(rows.size))
    graph = IntegerGraph(populations=pops, projections=tuple(projs), encoding=spec.encoding, readout=READOUT,
                         input_kind="spikes", readout_kind="final_v")
    # one population: its threshold's keys at the top level (as before several populations)
    top = per_pop[spec.names[0]] if len(spec.populations) == 1 else {}
    return Deployed(graph=graph, scales=scales,
                    info={"projections": per, "readout_scale": c_out, "readout_float_peak": peak,
                          "readout_vth": READOUT_VTH, "num_weight_bits": int(num_weight_bits), **top,
                          "thresholds": per_pop})


def quantized_model(model, deployed: Deployed):
    """The float model with every weight replaced by what its chip weight stands for
    (the 'quantized' accuracy: quantization alone, without integer dynamics)."""
    from deepr_neuro.training.recurrent import RecurrentModel

    weights = {}
    for q in deployed.graph.projections:
        dense = np.zeros_like(model.weights[q.name], dtype=np.float64)
        dense[q.cols, q.rows] = dequantized_weights(q.weights, q.weight_exp, deployed.scales[q.name])
        weights[q.name] = dense.astype(model.dtype)
    return RecurrentModel(model.spec, weights, {k: m.copy() for k, m in model.masks.items()}, dtype=model.dtype)


def run_sequences(backend, graph: IntegerGraph, x, lengths, batch_size: int = 64,
                  record_spikes: bool = False):
    """Run frames (n, T, F) of the given lengths (frames) through a backend, batches
    sorted by length, each batch max(n_i) * S steps; returns (readout_v (n, n_out),
    counts per population (n, n_k), SimResult list in batch order, order).

    ``counts`` cover each sample's own ``n_i * S`` steps only (never the batch's
    padding steps after its end), so activity does not depend on the batching."""
    enc = graph.encoding
    if not isinstance(enc, FrameEncoding):
        raise ConfigError("graph.encoding: a spike-source graph needs a FrameEncoding")
    S = int(enc.steps_per_frame)
    lengths = np.asarray(lengths, np.int64)
    order = np.argsort(lengths, kind="stable")
    n = len(order)
    k_out = graph.index(graph.readout)
    readout_v = np.zeros((n, graph.populations[k_out].n), np.float64 if not backend.exact else np.int64)
    counts = [np.zeros((n, p.n), np.int64) for p in graph.populations]
    results = []
    for lo in range(0, n, int(batch_size)):
        idx = order[lo:lo + int(batch_size)]
        L = lengths[idx]
        T = int(L.max())
        spikes = enc.encode(np.asarray(x)[idx, :T], L)
        res = backend.run(graph, spikes, T * S, record_spikes=True, n_steps=L * S)
        readout_v[idx] = res.readout_v
        own = np.arange(T * S)[None, :] < (L * S)[:, None]          # (B, T*S): the sample's own steps
        for k in range(len(counts)):
            counts[k][idx] = (res.spikes[k] & own[:, :, None]).sum(axis=1, dtype=np.int64)
        if not record_spikes:
            res.spikes = None
        results.append(res)
    return readout_v, counts, results, order


# ---------------------------------------------------------------------------
# Bundle level: a recurrent run directory (the R1/R2 contract)
# ---------------------------------------------------------------------------

def _block(manifest: Mapping, where: str) -> Dict:
    from deepr_neuro.errors import BundleError

    rec = manifest.get("recurrent")
    if not isinstance(rec, dict):
        raise BundleError(f"{where}: field 'recurrent': missing or not an object (encoding, neurons, readout of a "
                          "recurrent run); train the run again with this version")
    return rec


def encoding_from_info(info, where: str) -> FrameEncoding:
    """The FrameEncoding of a manifest block (``FrameEncoding.info()``)."""
    from deepr_neuro.errors import BundleError

    if not isinstance(info, dict) or info.get("kind", "frame-rate") != "frame-rate":
        raise BundleError(f"{where}: field 'encoding': expected a frame-rate encoding object, got "
                          f"{str(info)[:120]}; train the run again")
    try:
        return FrameEncoding(steps_per_frame=info.get("steps_per_frame"), scale=info.get("scale"),
                             signed=info.get("signed"))
    except ConfigError as exc:
        raise BundleError(f"{where}: field 'encoding.{str(exc)[len('encoding.'):]}"[:400]) from None


def spike_graph_from_manifest(graph: IntegerGraph, manifest: Mapping, where: str) -> IntegerGraph:
    """An exported recurrent bundle's graph with its spike-source input and final-v readout."""
    from dataclasses import replace

    from deepr_neuro.errors import BundleError

    snn = manifest.get("snn") or {}
    inp = snn.get("input") if isinstance(snn.get("input"), dict) else None
    if inp is None or inp.get("kind") != "spikes":
        raise BundleError(f"{where}: field 'snn.input': a recurrent export records its spike-source input "
                          f"(kind 'spikes' + encoding), got {str(inp)[:120]}; run `deepr-neuro export` again")
    enc = encoding_from_info(inp.get("encoding"), where + " snn.input")
    readout = snn.get("readout_kind", "final_v")
    if readout != "final_v":
        raise BundleError(f"{where}: field 'snn.readout_kind': {str(readout)[:40]!r}; a recurrent export reads "
                          "'final_v'; run `deepr-neuro export` again")
    return replace(graph, input_kind="spikes", readout_kind="final_v", encoding=enc)


def model_from_bundle(manifest: Mapping, arrays: Mapping[str, np.ndarray], where: str):
    """The trained float :class:`RecurrentModel` of a recurrent bundle (weights in threshold units)."""
    from deepr_neuro.errors import BundleError
    from deepr_neuro.training.recurrent import LifParams, RecurrentModel, RecurrentSpec

    rec = _block(manifest, where)
    g = manifest["graph"]
    pops_m = [p for p in g["populations"]]
    names = [p["name"] for p in pops_m]
    projs = {q["name"]: (q["pre"], q["post"]) for q in g["projections"]}
    single = {"in_rec": ("input", "rec"), "rec_rec": ("rec", "rec"), "rec_out": ("rec", "out")}
    hidden = names[1:-1]
    shape_ok = (len(names) >= 3 and names[0] == INPUT and names[-1] == READOUT and g.get("readout") == READOUT
                and all(n not in (INPUT, READOUT) for n in hidden) and len(set(names)) == len(names)
                and all(pre in names[:-1] and post in names[1:] for pre, post in projs.values()))
    if not shape_ok:
        raise BundleError(f"{where}: field 'graph': export deploys input, one or more recurrent populations and "
                          f"the readout out, every projection from input or a population into a population or "
                          f"out (one population: input, rec, out with in_rec, rec_rec, rec_out; got populations "
                          f"{names}, projections {sorted(projs)}, readout {str(g.get('readout'))[:40]!r})"[:600])
    size = {p["name"]: int(p["size"]) for p in pops_m}
    enc = encoding_from_info(rec.get("encoding"), where + " recurrent")
    neurons = rec.get("neurons") or {}
    try:
        lif = {k: LifParams(du=neurons[k]["du"], dv=neurons[k]["dv"], vth=neurons[k]["vth"])
               for k in (*hidden, READOUT)}
    except (KeyError, TypeError) as exc:
        raise BundleError(f"{where}: field 'recurrent.neurons': needs du, dv, vth of {', '.join(hidden)} and out "
                          f"({str(exc)[:80]})") from None
    except ConfigError as exc:
        raise BundleError(f"{where}: field 'recurrent.neurons': {exc}") from None
    kind = rec.get("nonlinearity", "spiking")
    try:
        if hidden == ["rec"] and projs == single:
            spec = RecurrentSpec(n_in=size[INPUT], n_rec=size["rec"], n_out=size[READOUT], rec=lif["rec"],
                                 out=lif[READOUT], encoding=enc, kind=kind)
        else:
            spec = RecurrentSpec.graph(size[INPUT], size[READOUT], [(n, size[n], lif[n]) for n in hidden],
                                       [(k, pre, post) for k, (pre, post) in projs.items()],
                                       out=lif[READOUT], encoding=enc, kind=kind)
    except ConfigError as exc:
        raise BundleError(f"{where}: field 'recurrent': {exc}") from None
    weights, masks = {}, {}
    for name, (pre, post) in spec.ends().items():
        w = np.zeros((size[pre], size[post]), np.float32)
        m = np.zeros((size[pre], size[post]), bool)
        rows = np.asarray(arrays[f"proj/{name}/rows"], np.int64)
        cols = np.asarray(arrays[f"proj/{name}/cols"], np.int64)
        if pre == post and np.any(rows == cols):
            k = int(np.flatnonzero(rows == cols)[0])
            raise BundleError(f"{where}: network.npz proj/{name}/rows: index {k} connects neuron {int(rows[k])} "
                              "to itself; a recurrent population has no self-connections")
        w[cols, rows] = np.asarray(arrays[f"proj/{name}/weight"], np.float32)
        m[cols, rows] = True
        weights[name], masks[name] = w, m
    return RecurrentModel(spec, weights, masks)


def load_run_sequences(manifest: Mapping):
    """The sequence data set a recurrent run was trained on, split as in training (sha256 checked)."""
    from deepr_neuro.errors import DataError
    from deepr_neuro.training.sequences import load_sequences

    from deepr_neuro.training.recurrent_spec import cut_to_max_samples

    t = manifest["training"]
    data = load_sequences(manifest["dataset"]["name"], data_dir=t.get("data_dir"),
                          val_fraction=t["val_fraction"], seed=t["seed"])
    model = manifest.get("model")
    n = model.get("max_samples") if isinstance(model, Mapping) else None
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise DataError(f"manifest field 'model.max_samples': must be an integer >= 1 (got {str(n)[:40]})")
        data = cut_to_max_samples(data, n)
    want = manifest["dataset"].get("sha256")
    if want and data.sha256 and data.sha256 != want:
        raise DataError(f"data set {data.name!r} differs from the one the run was trained on "
                        f"(sha256 {data.sha256[:12]}... vs manifest {want[:12]}...)")
    return data


def activity(graph: IntegerGraph, counts, lengths_steps) -> Dict:
    """Per-population spikes and synaptic operations per inference (mean over samples):
    a spike of a neuron costs one synop per outgoing synapse."""
    names = graph.names
    fan = {n: np.zeros(graph.population(n).n, np.int64) for n in names}
    for q in graph.projections:
        fan[q.pre] += np.bincount(np.asarray(q.cols, np.int64), minlength=graph.population(q.pre).n)
    spikes = {n: float(np.mean(c.sum(axis=1))) if len(c) else 0.0 for n, c in zip(names, counts)}
    synops = {n: float(np.mean(c @ fan[n])) if len(c) else 0.0 for n, c in zip(names, counts)}
    return {"spikes_per_inference": spikes, "synops_per_inference": synops,
            "total_spikes": float(sum(spikes.values())), "total_synops": float(sum(synops.values())),
            "steps_per_inference": float(np.mean(lengths_steps)) if len(lengths_steps) else 0.0}


def export_recurrent(run_dir, manifest: Dict, arrays: Dict[str, np.ndarray], weight_bits: Optional[int] = None,
                     target: str = "lava", say=lambda text: None) -> str:
    """Quantize a recurrent run, simulate its test set on the emulator, write the export
    arrays and the ``snn`` block into its bundle (atomically, after every load check)."""
    import time

    from deepr_neuro.hardware.profile import HardwareProfile
    from deepr_neuro.simulate.backends import get_backend
    from deepr_neuro.store.bundle import check_bundle, save_bundle
    from deepr_neuro.store.codec import integer_graph_to_arrays
    from deepr_neuro.training.recurrent import evaluate

    where = f"{run_dir}/manifest.json"
    if target != "lava":
        raise ConfigError(f"--to: unknown deployment target {str(target)[:40]!r}; the one target is 'lava'")
    profile = HardwareProfile.from_dict(manifest["profile"], source=manifest.get("profile_path") or "manifest")
    if weight_bits is None:
        weight_bits = manifest["training"].get("weight_bits") or profile.weight_bits
    if weight_bits not in profile.weight_bits_allowed:
        raise ConfigError(f"weight_bits: {weight_bits}-bit weights are not offered by the profile "
                          f"(weight_bits_allowed: {profile.weight_bits_allowed})")
    model = model_from_bundle(manifest, arrays, where)
    data = load_run_sequences(manifest)
    cores = {n: np.asarray(arrays[f"pop/{n}/core"]) for n in (INPUT, *model.spec.names, READOUT)
             if f"pop/{n}/core" in arrays}
    exp_range = (max(profile.weight_exp_min, LAVA_LIMITS["weight_exp"][0]),
                 min(profile.weight_exp_max, LAVA_LIMITS["weight_exp"][1]))
    say("export: quantizing (readout scale from the training set)")
    dep = deploy_recurrent(model, int(weight_bits), exp_range, data.x_train, data.len_train, cores)
    say(f"export: simulating the {len(data.y_test)} test samples on the emulator")
    t0 = time.perf_counter()
    v, counts, _, _ = run_sequences(get_backend("emulator"), dep.graph, data.x_test, data.len_test)
    t_sim = time.perf_counter() - t0
    S = int(model.spec.encoding.steps_per_frame)
    out_spikes = int(counts[dep.graph.index("out")].sum())
    if out_spikes:
        raise ConfigError(f"{run_dir}: the deployed readout spiked {out_spikes} times on the test set (its v "
                          "reached vth << 6); the readout scale is too large for these weights")
    acc = {
        "float_val": evaluate(model, data.x_val, data.len_val, data.y_val) if len(data.y_val) else None,
        "float_test": evaluate(model, data.x_test, data.len_test, data.y_test),
        "quantized_test": evaluate(quantized_model(model, dep), data.x_test, data.len_test, data.y_test),
        "snn_test": float(np.mean(np.argmax(v, axis=1) == data.y_test)),
    }
    act = activity(dep.graph, counts, data.len_test * S)
    snn = {"target": target, "num_weight_bits": int(weight_bits), "steps_per_frame": S,
           "steps_per_sample": int(data.len_test.max()) * S,
           "input": {"kind": "spikes", "encoding": model.spec.encoding.info(),
                     "rule": "the input population is a spike source replaying FrameEncoding.encode(frames); "
                             "a sample of n frames runs n * steps_per_frame steps"},
           "readout_kind": "final_v",
           "readout": "class = readout neuron with the largest v after the sample's last step n*S-1 "
                      "(non-spiking: vth 131071); ties go to the lowest index",
           "deploy": dep.info, "accuracy": acc, "activity": act, "emulator_seconds_test_set": t_sim}
    new_manifest = {**manifest, "snn": snn}
    new_arrays = {**arrays, **integer_graph_to_arrays(dep.graph)}
    check_bundle(run_dir, new_manifest, new_arrays, need_fit=True)
    save_bundle(run_dir, new_manifest, new_arrays)
    rec_text = ", ".join(f"{p.name} {p.size} LIF" for p in model.spec.populations)
    lines = [f"exported {run_dir} for {target}: recurrent network input {model.spec.n_in} (spike source) -> "
             f"{rec_text} -> out {model.spec.n_out} (final v), {weight_bits}-bit weights, "
             f"{S} steps per frame",
             f"accuracy on {data.name} test set",
             f"  float network    {100 * acc['float_test']:6.2f} %",
             f"  quantized float  {100 * acc['quantized_test']:6.2f} %",
             f"  SNN (emulator)   {100 * acc['snn_test']:6.2f} %   ({len(data.y_test)} samples in {t_sim:.1f} s)",
             "", f"{'population':<10} {'neurons':>8} {'spikes/inference':>17} {'synops/inference':>17}"]
    for p in dep.graph.populations:
        lines.append(f"{p.name:<10} {p.n:>8} {act['spikes_per_inference'][p.name]:>17.1f} "
                     f"{act['synops_per_inference'][p.name]:>17.1f}")
    return "\n".join(lines)
