"""What a bundle load checks: nothing wrong is accepted.

:func:`deepr_neuro.store.bundle.load_bundle` runs these checks on every load, for
every command (report, export, simulate, crosscheck, plot, sweep), so a
bundle that is damaged, tampered with, or half of two different writes is
refused before anything uses it. The first violation found is named: file,
array or field, index, value and limit, and the fix.

Order of the checks (the first failing one is reported):

1. manifest.json is an object with the fields every command reads, of the
   right JSON types (:func:`check_manifest`); its ``profile`` block is
   validated again as a :class:`~deepr_neuro.hardware.profile.HardwareProfile`; core
   ranges partition every layer, core ids are unique and on the chip.
2. network.npz holds exactly the expected arrays (:func:`check_arrays`):
   integer dtypes for indices and chip integers (never a silent cast of float
   or complex values), 1-D lengths consistent with the manifest, indices in
   range, (row, col) pairs unique and sorted, finite float weights, every
   post-neuron on the core the manifest's ranges give it.
3. If the network is exported: every chip integer within the format the
   profile allows (weights in range and on the ``num_weight_bits`` grid,
   ``weight_exp``, ``vth``, ``du``/``dv``, bias mantissa and exponent, input
   encoding gain/shift).
4. For the deployment commands (``need_fit``): every core's neurons,
   synapses, input axons and synapse memory against the limits *recomputed
   from the profile* (:func:`deepr_neuro.hardware.report.core_report`; the capacities
   stored in the manifest are never trusted).
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from deepr_neuro.errors import BudgetError, BundleError, ConfigError

#: Largest number of time steps per sample a command runs (simulate, crosscheck,
#: export); a bound, so that a typo (``--steps 100000000``) is refused at once.
MAX_STEPS = 10_000

IN_KEYS = ("in_vth", "in_du", "in_dv", "in_bias_exp", "in_bias_mant", "in_gain", "in_shift")
TRAINED_LAYER_KEYS = ("rows", "cols", "weight", "core")
EXPORT_LAYER_KEYS = ("qweight", "weight_exp", "num_weight_bits", "vth", "du", "dv", "bias_exp", "bias_mant")
OPTIONAL_KEYS = ("input_core", "rewired_per_step")
_EXPORT_RE = re.compile(r"^(in_(vth|du|dv|bias_exp|bias_mant|gain|shift)|"
                        r"l\d+_(qweight|weight_exp|num_weight_bits|vth|du|dv|bias_exp|bias_mant))$")
#: in_shift above this would shift every pixel to 0 (and >= 64 is undefined in NumPy)
MAX_SHIFT = 31


def is_export_key(key: str) -> bool:
    """An array written by ``export`` (the integer network), not by ``train``."""
    return bool(_EXPORT_RE.match(key))


def cut(value: Any, limit: int = 200) -> str:
    """repr of a user value, cut to ``limit`` characters for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "...(cut)"


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_num(v: Any) -> bool:
    return (isinstance(v, (int, float, np.integer, np.floating))
            and not isinstance(v, (bool, np.bool_)))


# --------------------------------------------------------------------------
# manifest.json
# --------------------------------------------------------------------------

def check_manifest(m: Any, mpath: str, fix: str):
    """Validate the manifest's shape and its profile; return the HardwareProfile."""
    from deepr_neuro.hardware.profile import HardwareProfile

    def bad(field: str, msg: str) -> BundleError:
        return BundleError(f"{mpath}: field {field!r}: {msg}; {fix}")

    if not isinstance(m, dict):
        raise BundleError(f"{mpath}: must hold a JSON object, got {type(m).__name__} "
                          f"{cut(m, 80)}; {fix}")
    for key, typ, name in (("profile", dict, "an object"), ("dataset", dict, "an object"),
                           ("training", dict, "an object"), ("layers", list, "a list")):
        if key not in m:
            raise bad(key, "missing")
        if not isinstance(m[key], typ):
            raise bad(key, f"must be {name}, got {type(m[key]).__name__} {cut(m[key], 80)}")
    for key in ("model", "metrics", "snn", "integrity"):
        if key in m and not isinstance(m[key], dict):
            raise bad(key, f"must be an object, got {type(m[key]).__name__} {cut(m[key], 80)}")
    if "input_cores" in m and not isinstance(m["input_cores"], list):
        raise bad("input_cores", f"must be a list, got {type(m['input_cores']).__name__}")
    ds, tr = m["dataset"], m["training"]
    if not isinstance(ds.get("name"), str) or not ds["name"]:
        raise bad("dataset.name", f"must be a data set name, got {cut(ds.get('name'), 80)}")
    if "sha256" in ds and ds["sha256"] is not None and not isinstance(ds["sha256"], str):
        raise bad("dataset.sha256", f"must be a string, got {cut(ds['sha256'], 80)}")
    if not _is_num(tr.get("val_fraction")) or not 0 <= tr["val_fraction"] < 1:
        raise bad("training.val_fraction", f"must be a number in [0, 1), got {cut(tr.get('val_fraction'), 80)}")
    if not _is_int(tr.get("seed")) or tr["seed"] < 0:
        raise bad("training.seed", f"must be a non-negative integer, got {cut(tr.get('seed'), 80)}")
    if tr.get("data_dir") is not None and not isinstance(tr["data_dir"], str):
        raise bad("training.data_dir", f"must be a path or null, got {cut(tr['data_dir'], 80)}")
    if tr.get("weight_bits") is not None and not _is_int(tr["weight_bits"]):
        raise bad("training.weight_bits", f"must be an integer or null, got {cut(tr['weight_bits'], 80)}")
    if m.get("profile_path") is not None and not isinstance(m["profile_path"], str):
        raise bad("profile_path", f"must be a string or null, got {cut(m['profile_path'], 80)}")
    try:
        profile = HardwareProfile.from_dict(m["profile"], source=f"{mpath} (field 'profile')")
    except ConfigError as e:
        raise BundleError(f"{e}; {fix}") from None
    wb = tr.get("weight_bits")
    if wb is not None and wb not in profile.weight_bits_allowed:
        raise bad("training.weight_bits", f"{wb}-bit weights are not offered by the profile "
                                          f"(weight_bits_allowed: {profile.weight_bits_allowed})")

    layers = m["layers"]
    if not layers:
        raise bad("layers", "empty: a run has at least one weight layer")
    names = []
    used: Dict[int, str] = {}

    def check_cores(where: str, cores: Any, n: int, layer_name: str, need_budget: bool) -> None:
        if not isinstance(cores, list) or not cores:
            raise bad(where, f"must be a non-empty list of cores, got {cut(cores, 80)}")
        start = 0
        for j, c in enumerate(cores):
            w = f"{where}[{j}]"
            if not isinstance(c, dict):
                raise bad(w, f"must be an object, got {cut(c, 80)}")
            for k in ("core", "post_start", "post_stop") + (("budget",) if need_budget else ()):
                if not _is_int(c.get(k)) or c[k] < 0:
                    raise bad(f"{w}.{k}", f"must be a non-negative integer, got {cut(c.get(k), 80)}")
            if c["post_start"] != start or not c["post_start"] < c["post_stop"] <= n:
                raise bad(w, f"neurons {c['post_start']}..{c['post_stop']} do not continue the core "
                             f"ranges at {start} inside 0..{n} (the cores must split the layer's "
                             "neurons in order)")
            if c["post_stop"] - c["post_start"] > profile.neurons_per_core:
                raise bad(w, f"{c['post_stop'] - c['post_start']} neurons on one core > "
                             f"neurons_per_core {profile.neurons_per_core} of the profile")
            if c["core"] >= profile.cores:
                raise bad(f"{w}.core", f"core id {c['core']} does not exist on a chip with "
                                       f"{profile.cores} cores")
            if c["core"] in used:
                raise bad(f"{w}.core", f"core id {c['core']} is used twice (also by {used[c['core']]!r})")
            used[c["core"]] = layer_name
            start = c["post_stop"]
        if start != n:
            raise bad(where, f"the core ranges end at neuron {start}, the layer has {n}")

    for i, layer in enumerate(layers):
        w = f"layers[{i}]"
        if not isinstance(layer, dict):
            raise bad(w, f"must be an object, got {cut(layer, 80)}")
        if not isinstance(layer.get("name"), str) or not layer["name"]:
            raise bad(f"{w}.name", f"must be a non-empty string, got {cut(layer.get('name'), 80)}")
        if layer["name"] in names:
            raise bad(f"{w}.name", f"{layer['name']!r} is used twice")
        names.append(layer["name"])
        for k in ("n_in", "n_out"):
            if not _is_int(layer.get(k)) or layer[k] < 1:
                raise bad(f"{w}.{k}", f"must be a positive integer, got {cut(layer.get(k), 80)}")
        if i and layer["n_in"] != layers[i - 1]["n_out"]:
            raise bad(f"{w}.n_in", f"{layer['n_in']} != n_out {layers[i - 1]['n_out']} of the layer before")
    model = m.get("model")
    if model is not None and "input_size" in model and model["input_size"] != layers[0]["n_in"]:
        raise bad("layers[0].n_in", f"{layers[0]['n_in']} != model.input_size {cut(model['input_size'], 40)}")
    if "input_cores" in m:
        check_cores("input_cores", m["input_cores"], layers[0]["n_in"], "input", False)
    for i, layer in enumerate(layers):
        check_cores(f"layers[{i}].cores", layer.get("cores"), layer["n_out"], layer["name"], True)
    if len(used) > profile.cores:
        raise bad("layers", f"{len(used)} cores used > {profile.cores} on the chip")

    snn = m.get("snn")
    if snn is not None:
        s = snn.get("steps_per_sample")
        if not _is_int(s) or not 1 <= s <= MAX_STEPS:
            raise bad("snn.steps_per_sample", f"must be an integer in 1..{MAX_STEPS}, got {cut(s, 80)} "
                                              "(`deepr-neuro export` rewrites the snn block)")
    return profile


# --------------------------------------------------------------------------
# network.npz
# --------------------------------------------------------------------------

class _Arrays:
    """Typed access to the npz arrays with messages naming file, array, index, value, limit."""

    def __init__(self, arrays: Mapping[str, np.ndarray], npath: str, fix: Mapping[str, str]):
        self.a, self.npath, self.fixes = arrays, npath, fix

    def fix(self, key: str) -> str:
        return self.fixes["export" if is_export_key(key) else "trained"]

    def fail(self, key: str, msg: str) -> BundleError:
        return BundleError(f"{self.npath}: array {cut(key, 60)}: {msg}; {self.fix(key)}")

    def get(self, key: str) -> np.ndarray:
        if key not in self.a:
            raise BundleError(f"{self.npath}: array {key!r} is missing; {self.fix(key)}")
        return np.asarray(self.a[key])

    def ints(self, key: str, n: Optional[int] = None, what: str = "") -> np.ndarray:
        a = self.get(key)
        if a.dtype.kind not in "iu":
            raise self.fail(key, f"dtype {a.dtype} is not an integer type (values are never cast)")
        if a.ndim != 1:
            raise self.fail(key, f"must be 1-D, has shape {a.shape}")
        if n is not None and a.shape[0] != n:
            raise self.fail(key, f"has {a.shape[0]} entries, expected {n}{what}")
        return a

    def scalar(self, key: str) -> int:
        a = self.get(key)
        if a.dtype.kind not in "iu":
            raise self.fail(key, f"dtype {a.dtype} is not an integer type (values are never cast)")
        if a.size != 1 or a.ndim > 1:
            raise self.fail(key, f"must be a single integer, has shape {a.shape}")
        return int(a.reshape(()))

    def in_range(self, key: str, values, lo: int, hi: int, limit: str) -> None:
        v = np.asarray(values)
        if v.ndim == 0:
            if not lo <= int(v) <= hi:
                raise self.fail(key, f"value {int(v)} outside [{lo}, {hi}] ({limit})")
            return
        badi = np.flatnonzero((v < lo) | (v > hi))
        if badi.size:
            k = int(badi[0])
            raise self.fail(key, f"index {k}: value {int(v[k])} outside [{lo}, {hi}] ({limit})")


def check_arrays(manifest: Dict[str, Any], profile, arrays: Mapping[str, np.ndarray],
                 npath: str, fix: Mapping[str, str], need_finite: bool = True) -> None:
    """Structural and chip-format checks of the arrays against the manifest and profile.

    Non-finite float weights are refused, except (``need_finite=False``) in a
    run recorded as diverged (``metrics.diverged_at_epoch``), so ``report``
    still shows its table; export refuses them.
    """
    from deepr_neuro.hardware.chip_format import ChipFormat
    from deepr_neuro.network.fixed_point import sign_mode_of, weight_range, weight_step

    A = _Arrays(arrays, npath, fix)
    layers = manifest["layers"]
    n_layers = len(layers)
    exported = "snn" in manifest
    expected = set(OPTIONAL_KEYS)
    for i in range(n_layers):
        expected.update(f"l{i}_{k}" for k in TRAINED_LAYER_KEYS)
        expected.update(f"l{i}_{k}" for k in EXPORT_LAYER_KEYS)
    expected.update(IN_KEYS)
    for key in arrays:
        if key not in expected:
            raise A.fail(key, f"unknown array (the manifest has {n_layers} layers; this format reads "
                              "l<i>_* for those layers, in_*, input_core and rewired_per_step)")
    has_export = [k for k in arrays if is_export_key(k)]
    if has_export and not exported:
        raise A.fail(has_export[0], "belongs to an SNN export but manifest.json has no 'snn' block "
                                    "(an export was interrupted)")
    diverged = (manifest.get("metrics") or {}).get("diverged_at_epoch") is not None

    def core_map(cores: List[Dict], n: int) -> np.ndarray:
        out = np.empty(n, dtype=np.int64)
        for c in cores:
            out[c["post_start"]:c["post_stop"]] = c["core"]
        return out

    n_in0 = layers[0]["n_in"]
    if "input_core" in arrays:
        ic = A.ints("input_core", n_in0, f" (input neurons, layers[0].n_in)")
        if "input_cores" in manifest:
            want = core_map(manifest["input_cores"], n_in0)
            diff = np.flatnonzero(ic != want)
            if diff.size:
                k = int(diff[0])
                raise A.fail("input_core", f"index {k}: input neuron on core {int(ic[k])}, the manifest's "
                                           f"input_cores put it on core {int(want[k])}")
    if "rewired_per_step" in arrays:
        r = A.ints("rewired_per_step")
        A.in_range("rewired_per_step", r, 0, np.iinfo(np.int64).max, "a count")

    for i, layer in enumerate(layers):
        n_in, n_out, name = layer["n_in"], layer["n_out"], layer["name"]
        rows = A.ints(f"l{i}_rows")
        L = rows.shape[0]
        cols = A.ints(f"l{i}_cols", L, f" (as many as l{i}_rows)")
        w = A.get(f"l{i}_weight")
        if w.dtype.kind != "f":
            raise A.fail(f"l{i}_weight", f"dtype {w.dtype} is not a real float type (layer {name!r})")
        if w.shape != (L,):
            raise A.fail(f"l{i}_weight", f"has shape {w.shape}, expected ({L},) as l{i}_rows (layer {name!r})")
        A.in_range(f"l{i}_rows", rows, 0, n_out - 1, f"post-neuron index, layer {name!r} n_out = {n_out}")
        A.in_range(f"l{i}_cols", cols, 0, n_in - 1, f"pre-neuron index, layer {name!r} n_in = {n_in}")
        if L > 1:
            key = rows.astype(np.int64) * n_in + cols.astype(np.int64)
            d = np.flatnonzero(np.diff(key) <= 0)
            if d.size:
                k = int(d[0]) + 1
                pair = (int(rows[k]), int(cols[k]))
                if key[k] == key[k - 1]:
                    raise A.fail(f"l{i}_rows", f"index {k}: (row, col) = {pair} is a duplicate of index "
                                               f"{k - 1} (layer {name!r}; each connection once)")
                raise A.fail(f"l{i}_rows", f"index {k}: (row, col) = {pair} is out of order (pairs must be "
                                           f"sorted by row, then col; layer {name!r})")
        if need_finite or not diverged or exported:
            nf = np.flatnonzero(~np.isfinite(w))
            if nf.size:
                k = int(nf[0])
                raise A.fail(f"l{i}_weight", f"index {k}: weight {w[k]} is not finite (layer {name!r}); "
                                             "the run diverged: train it again with a smaller --lr")
        core = A.ints(f"l{i}_core", n_out, f" (one per neuron of layer {name!r})")
        want = core_map(layer["cores"], n_out)
        diff = np.flatnonzero(core != want)
        if diff.size:
            k = int(diff[0])
            raise A.fail(f"l{i}_core", f"index {k}: neuron {k} of layer {name!r} is on core {int(core[k])}, "
                                       f"the manifest's core ranges put it on core {int(want[k])}")

    if not exported:
        return
    # ---- the integer network: every integer within the chip's format --------------------
    base = ChipFormat.from_profile(profile)
    vth_max, dmax = base.vth_max, base.decay_max
    bmin, bmax, emax = base.bias_mant_min, base.bias_mant_max, base.bias_exp_max
    for key, lo, hi, lim in (("in_vth", 0, vth_max, f"{base.threshold_mant_bits}-bit threshold"),
                             ("in_du", 0, dmax, f"{base.decay_bits}-bit decay"),
                             ("in_dv", 0, dmax, f"{base.decay_bits}-bit decay"),
                             ("in_bias_exp", 0, emax, "profile bias_exp_max"),
                             ("in_gain", 0, (1 << 31) - 1, "31-bit gain"),
                             ("in_shift", 0, MAX_SHIFT, "a right shift")):
        A.in_range(key, A.scalar(key), lo, hi, lim)
    in_bias = A.ints("in_bias_mant", n_in0, " (one per input neuron)")
    A.in_range("in_bias_mant", in_bias, bmin, bmax, f"{base.bias_mant_bits}-bit signed bias")
    top = (255 * A.scalar("in_gain")) >> A.scalar("in_shift")
    if in_bias.size and int(in_bias.max()) + top > bmax:
        raise A.fail("in_gain", f"pixel 255 encodes to bias {int(in_bias.max()) + top} > {bmax} "
                                f"({base.bias_mant_bits}-bit signed bias)")
    for i, layer in enumerate(layers):
        name, n_out = layer["name"], layer["n_out"]
        rows = A.get(f"l{i}_rows")
        q = A.ints(f"l{i}_qweight", rows.shape[0], f" (as many as l{i}_rows)")
        b = A.scalar(f"l{i}_num_weight_bits")
        if b not in profile.weight_bits_allowed:
            raise A.fail(f"l{i}_num_weight_bits", f"value {b} is not among the profile's weight_bits_allowed "
                                                  f"{profile.weight_bits_allowed} (layer {name!r})")
        lo, hi = weight_range(b, sign_mode_of(q))
        lo, hi = max(lo, profile.weight_min), min(hi, profile.weight_max)
        step = weight_step(b, sign_mode_of(q))
        A.in_range(f"l{i}_qweight", q, lo, hi, f"{b}-bit weights, layer {name!r}")
        off = np.flatnonzero(q % step)
        if off.size:
            k = int(off[0])
            raise A.fail(f"l{i}_qweight", f"index {k}: weight {int(q[k])} is not a multiple of {step} "
                                          f"(the {b}-bit grid the chip keeps; layer {name!r})")
        A.in_range(f"l{i}_weight_exp", A.scalar(f"l{i}_weight_exp"), profile.weight_exp_min,
                   profile.weight_exp_max, "profile weight_exp_min..weight_exp_max")
        A.in_range(f"l{i}_vth", A.scalar(f"l{i}_vth"), 0, vth_max, f"{base.threshold_mant_bits}-bit threshold")
        A.in_range(f"l{i}_du", A.scalar(f"l{i}_du"), 0, dmax, f"{base.decay_bits}-bit decay")
        A.in_range(f"l{i}_dv", A.scalar(f"l{i}_dv"), 0, dmax, f"{base.decay_bits}-bit decay")
        A.in_range(f"l{i}_bias_exp", A.scalar(f"l{i}_bias_exp"), 0, emax, "profile bias_exp_max")
        bias = A.ints(f"l{i}_bias_mant", n_out, f" (one per neuron of layer {name!r})")
        A.in_range(f"l{i}_bias_mant", bias, bmin, bmax, f"{base.bias_mant_bits}-bit signed bias")


def check_fit(manifest: Dict[str, Any], arrays: Mapping[str, np.ndarray], run_dir: str) -> None:
    """Refuse a network that does not fit its profile (limits recomputed from the profile)."""
    from deepr_neuro.hardware.report import core_report

    problems = core_report(manifest, arrays).problems
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise BudgetError(f"{run_dir}: the network does not fit its profile: {problems[0]}{more}; "
                          f"`deepr-neuro report {run_dir}` shows every core; export again if the export's "
                          "weight width differs from the trained --weight-bits, else train again with a lower "
                          "--connectivity or for a larger profile")
