"""What a bundle load checks: nothing wrong is accepted.

:func:`deepr_neuro.store.bundle.load_bundle` runs these checks on every load, for
every command (report, export, simulate, crosscheck, plot, sweep), so a
bundle that is damaged, tampered with, or half of two different writes is
refused before anything uses it. The first violation found is named: file,
array or field, index, value and limit, and the fix.

Order of the checks (the first failing one is reported):

1. manifest.json is an object with the fields every command reads, of the
   right JSON types (:func:`check_manifest`); its ``profile`` block is
   validated again as a :class:`~deepr_neuro.hardware.profile.HardwareProfile`;
   the ``graph`` (version 2) or the ``layers`` (version 1, then turned into the
   graph): populations with core ranges partitioning each of them, core ids
   unique and on the chip, projections between existing populations, none into
   the input population, a readout.
2. network.npz holds exactly the expected arrays, per population and per
   projection (:func:`check_arrays`; a version-1 bundle's arrays are renamed to
   version 2 first and named as in the file in every message):
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

from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from deepr_neuro.errors import BudgetError, BundleError, ConfigError
# Array names of both formats live in the codec; version 1 is read by renaming its arrays
# to version 2 (store.codec.v1_to_v2), so one set of checks serves both.
from deepr_neuro.store.codec import (ENCODING_KEYS, OPTIONAL_KEYS, POP_EXPORT, POP_TRAINED, PROJ_EXPORT,
                                     PROJ_TRAINED, is_export_key, pop_key, proj_key)

#: Largest number of time steps per sample a command runs (simulate, crosscheck,
#: export); a bound, so that a typo (``--steps 100000000``) is refused at once.
MAX_STEPS = 10_000

#: longest population / projection name (names become array names ``pop/<name>/...``)
MAX_NAME = 200
ROLES = ("input", "hidden", "readout")
#: in_shift above this would shift every pixel to 0 (and >= 64 is undefined in NumPy)
MAX_SHIFT = 31


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
    """Validate the manifest's shape and its profile; return (HardwareProfile, manifest in the
    version-2 form): a version-1 manifest's ``layers`` are checked as such (errors name
    ``layers[i]...``) and then turned into the ``graph`` block, which is checked for both."""
    from deepr_neuro.hardware.profile import HardwareProfile
    from deepr_neuro.store.codec import chain_graph_block

    def bad(field: str, msg: str) -> BundleError:
        return BundleError(f"{mpath}: field {field!r}: {msg}; {fix}")

    if not isinstance(m, dict):
        raise BundleError(f"{mpath}: must hold a JSON object, got {type(m).__name__} "
                          f"{cut(m, 80)}; {fix}")
    v1 = m.get("version") == 1
    for key, typ, name in (("profile", dict, "an object"), ("dataset", dict, "an object"),
                           ("training", dict, "an object"),
                           ("layers", list, "a list") if v1 else ("graph", dict, "an object")):
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

    if v1:
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
        graph = chain_graph_block(layers, m.get("input_cores"), layers[0]["n_in"])
        m = {**{k: v for k, v in m.items() if k not in ("layers", "input_cores")}, "version": 2, "graph": graph}
    _check_graph(m, profile, bad)

    snn = m.get("snn")
    if snn is not None:
        s = snn.get("steps_per_sample")
        if not _is_int(s) or not 1 <= s <= MAX_STEPS:
            raise bad("snn.steps_per_sample", f"must be an integer in 1..{MAX_STEPS}, got {cut(s, 80)} "
                                              "(`deepr-neuro export` rewrites the snn block)")
    return profile, m


def _unique_name(bad, where: str, name, taken) -> str:
    """A population's or projection's name: a non-empty string of at most
    MAX_NAME characters that ``taken`` does not hold yet."""
    if not isinstance(name, str) or not name or len(name) > MAX_NAME:
        raise bad(f"{where}.name", f"must be a non-empty string of at most {MAX_NAME} characters, got {cut(name, 80)}")
    if name in taken:
        raise bad(f"{where}.name", f"{name!r} is used twice")
    return name


def _check_graph(m: Dict[str, Any], profile, bad) -> None:
    """The ``graph`` block: populations (input first, names unique, core ranges partitioning
    each population, core ids on the chip and used once, K_c per core), projections (pre
    and post exist, nothing enters the input population) and the readout."""
    g = m["graph"]
    for key in ("populations", "projections"):
        if not isinstance(g.get(key), list) or not g[key]:
            raise bad(f"graph.{key}", f"must be a non-empty list, got {cut(g.get(key), 80)}")
    pops, projs = g["populations"], g["projections"]
    size: Dict[str, int] = {}
    used: Dict[int, str] = {}
    for i, p in enumerate(pops):
        w = f"graph.populations[{i}]"
        if not isinstance(p, dict):
            raise bad(w, f"must be an object, got {cut(p, 80)}")
        name = _unique_name(bad, w, p.get("name"), size)
        if not _is_int(p.get("size")) or p["size"] < 1:
            raise bad(f"{w}.size", f"must be a positive integer, got {cut(p.get('size'), 80)}")
        role = p.get("role")
        want = "input" if i == 0 else None
        if role not in ROLES or (want and role != want) or (i and role == "input"):
            raise bad(f"{w}.role", f"must be one of {ROLES} (the first population, and only it, is the "
                                   f"input), got {cut(role, 80)}")
        size[name] = p["size"]
        cores = p.get("cores")
        if not isinstance(cores, list) or (i and not cores):
            raise bad(f"{w}.cores", f"must be a{'' if i == 0 else ' non-empty'} list of cores, got {cut(cores, 80)}")
        start = 0
        for j, c in enumerate(cores):
            wc = f"{w}.cores[{j}]"
            if not isinstance(c, dict):
                raise bad(wc, f"must be an object, got {cut(c, 80)}")
            for k in ("core", "start", "stop") + (("budget",) if i else ()):
                if not _is_int(c.get(k)) or c[k] < 0:
                    raise bad(f"{wc}.{k}", f"must be a non-negative integer, got {cut(c.get(k), 80)}")
            if c["start"] != start or not c["start"] < c["stop"] <= p["size"]:
                raise bad(wc, f"neurons {c['start']}..{c['stop']} do not continue the core ranges at {start} "
                              f"inside 0..{p['size']} (the cores must split the population's neurons in order)")
            if c["stop"] - c["start"] > profile.neurons_per_core:
                raise bad(wc, f"{c['stop'] - c['start']} neurons on one core > neurons_per_core "
                              f"{profile.neurons_per_core} of the profile")
            if c["core"] >= profile.cores:
                raise bad(f"{wc}.core", f"core id {c['core']} does not exist on a chip with {profile.cores} cores")
            if c["core"] in used:
                raise bad(f"{wc}.core", f"core id {c['core']} is used twice (also by {used[c['core']]!r})")
            used[c["core"]] = name
            start = c["stop"]
        if cores and start != p["size"]:
            raise bad(f"{w}.cores", f"the core ranges end at neuron {start}, the population has {p['size']}")
    inp = pops[0]["name"]
    seen = set()
    for i, q in enumerate(projs):
        w = f"graph.projections[{i}]"
        if not isinstance(q, dict):
            raise bad(w, f"must be an object, got {cut(q, 80)}")
        name = _unique_name(bad, w, q.get("name"), seen)
        seen.add(name)
        for k in ("pre", "post"):
            if not isinstance(q.get(k), str) or q[k] not in size:
                raise bad(f"{w}.{k}", f"must name a population ({cut(list(size), 120)}), got {cut(q.get(k), 80)}")
        if q["post"] == inp:
            raise bad(f"{w}.post", f"no projection may enter the input population {inp!r} (it is driven by the "
                                   "encoded sample)")
        if "budget" in q and q["budget"] is not None and (not _is_int(q["budget"]) or q["budget"] < 0):
            raise bad(f"{w}.budget", f"must be a non-negative integer or null, got {cut(q['budget'], 80)}")
    ro = g.get("readout")
    if not isinstance(ro, str) or ro not in size or ro == inp:
        raise bad("graph.readout", f"must name a population other than the input, got {cut(ro, 80)}")
    model = m.get("model")
    if model is not None and "input_size" in model and model["input_size"] != pops[0]["size"]:
        raise bad("graph.populations[0].size", f"{pops[0]['size']} != model.input_size "
                                               f"{cut(model['input_size'], 40)}")
    if len(used) > profile.cores:
        raise bad("graph", f"{len(used)} cores used > {profile.cores} on the chip")


# --------------------------------------------------------------------------
# network.npz
# --------------------------------------------------------------------------

class _Arrays:
    """Typed access to the npz arrays with messages naming file, array, index, value, limit.

    ``shown`` maps an array's version-2 name to the name in the file (a version-1
    bundle's ``l0_rows`` is checked as ``proj/h1/rows`` and named as ``l0_rows``)."""

    def __init__(self, arrays: Mapping[str, np.ndarray], npath: str, fix: Mapping[str, str],
                 shown: Optional[Mapping[str, str]] = None):
        self.a, self.npath, self.fixes, self.shown = arrays, npath, fix, shown or {}

    def name(self, key: str) -> str:
        return self.shown.get(key, key)

    def fix(self, key: str) -> str:
        return self.fixes["export" if is_export_key(key) else "trained"]

    def fail(self, key: str, msg: str) -> BundleError:
        return BundleError(f"{self.npath}: array {cut(self.name(key), 60)}: {msg}; {self.fix(key)}")

    def get(self, key: str) -> np.ndarray:
        if key not in self.a:
            raise BundleError(f"{self.npath}: array {self.name(key)!r} is missing; {self.fix(key)}")
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
                 npath: str, fix: Mapping[str, str], need_finite: bool = True,
                 shown: Optional[Mapping[str, str]] = None) -> None:
    """Structural and chip-format checks of the (version-2 named) arrays against the
    manifest's ``graph`` and the profile: per projection its indices, order and weights;
    per population its core placement and neuron parameters.

    Non-finite float weights are refused, except (``need_finite=False``) in a
    run recorded as diverged (``metrics.diverged_at_epoch``), so ``report``
    still shows its table; export refuses them.
    """
    from deepr_neuro.hardware.chip_format import ChipFormat
    from deepr_neuro.network.fixed_point import sign_mode_of, weight_range, weight_step

    A = _Arrays(arrays, npath, fix, shown)
    g = manifest["graph"]
    pops, projs = g["populations"], g["projections"]
    size = {p["name"]: p["size"] for p in pops}
    inp = pops[0]["name"]
    exported = "snn" in manifest
    expected = set(OPTIONAL_KEYS) | set(ENCODING_KEYS)
    for p in pops:
        expected.update(pop_key(p["name"], k) for k in POP_TRAINED + POP_EXPORT)
    for q in projs:
        expected.update(proj_key(q["name"], k) for k in PROJ_TRAINED + PROJ_EXPORT)
    for key in arrays:
        if key not in expected:
            raise A.fail(key, f"unknown array (the manifest has {len(pops)} populations and {len(projs)} "
                              "projections; this format reads pop/<population>/*, proj/<projection>/*, "
                              "input/gain|shift and rewired_per_step; version 1: l<i>_*, in_*, input_core)")
    has_export = [k for k in arrays if is_export_key(k)]
    if has_export and not exported:
        raise A.fail(has_export[0], "belongs to an SNN export but manifest.json has no 'snn' block "
                                    "(an export was interrupted)")
    diverged = (manifest.get("metrics") or {}).get("diverged_at_epoch") is not None

    def core_map(cores: List[Dict], n: int) -> np.ndarray:
        out = np.empty(n, dtype=np.int64)
        for c in cores:
            out[c["start"]:c["stop"]] = c["core"]
        return out

    if "rewired_per_step" in arrays:
        r = A.ints("rewired_per_step")
        A.in_range("rewired_per_step", r, 0, np.iinfo(np.int64).max, "a count")

    for q in projs:
        name, n_in, n_out = q["name"], size[q["pre"]], size[q["post"]]
        kr, kc, kw = (proj_key(name, k) for k in ("rows", "cols", "weight"))
        rows = A.ints(kr)
        L = rows.shape[0]
        cols = A.ints(kc, L, f" (as many as {A.name(kr)})")
        w = A.get(kw)
        if w.dtype.kind != "f":
            raise A.fail(kw, f"dtype {w.dtype} is not a real float type (projection {name!r})")
        if w.shape != (L,):
            raise A.fail(kw, f"has shape {w.shape}, expected ({L},) as {A.name(kr)} (projection {name!r})")
        A.in_range(kr, rows, 0, n_out - 1, f"post-neuron index, projection {name!r} into {q['post']!r}: "
                                           f"n_out = {n_out}")
        A.in_range(kc, cols, 0, n_in - 1, f"pre-neuron index, projection {name!r} from {q['pre']!r}: n_in = {n_in}")
        if L > 1:
            key = rows.astype(np.int64) * n_in + cols.astype(np.int64)
            d = np.flatnonzero(np.diff(key) <= 0)
            if d.size:
                k = int(d[0]) + 1
                pair = (int(rows[k]), int(cols[k]))
                if key[k] == key[k - 1]:
                    raise A.fail(kr, f"index {k}: (row, col) = {pair} is a duplicate of index {k - 1} "
                                     f"(projection {name!r}; each connection once)")
                raise A.fail(kr, f"index {k}: (row, col) = {pair} is out of order (pairs must be sorted by "
                                 f"row, then col; projection {name!r})")
        if need_finite or not diverged or exported:
            nf = np.flatnonzero(~np.isfinite(w))
            if nf.size:
                k = int(nf[0])
                raise A.fail(kw, f"index {k}: weight {w[k]} is not finite (projection {name!r}); "
                                 "the run diverged: train it again with a smaller --lr")
    for p in pops:
        name, n, key = p["name"], p["size"], pop_key(p["name"], "core")
        if name == inp and key not in arrays:  # optional for the input population (as in version 1)
            continue
        what = "input neurons" if name == inp else f"one per neuron of population {name!r}"
        core = A.ints(key, n, f" ({what})")
        if not p["cores"]:
            continue
        want = core_map(p["cores"], n)
        diff = np.flatnonzero(core != want)
        if diff.size:
            k = int(diff[0])
            raise A.fail(key, f"index {k}: neuron {k} of population {name!r} is on core {int(core[k])}, "
                              f"the manifest's core ranges put it on core {int(want[k])}")

    if not exported:
        return
    # ---- the integer network: every integer within the chip's format --------------------
    base = ChipFormat.from_profile(profile)
    vth_max, dmax = base.vth_max, base.decay_max
    bmin, bmax, emax = base.bias_mant_min, base.bias_mant_max, base.bias_exp_max
    for key, lo, hi, lim in (("input/gain", 0, (1 << 31) - 1, "31-bit gain"),
                             ("input/shift", 0, MAX_SHIFT, "a right shift")):
        A.in_range(key, A.scalar(key), lo, hi, lim)
    for p in pops:
        name, n = p["name"], p["size"]
        for f, hi, lim in (("vth", vth_max, f"{base.threshold_mant_bits}-bit threshold"),
                           ("du", dmax, f"{base.decay_bits}-bit decay"), ("dv", dmax, f"{base.decay_bits}-bit decay"),
                           ("bias_exp", emax, "profile bias_exp_max")):
            A.in_range(pop_key(name, f), A.scalar(pop_key(name, f)), 0, hi, lim)
        kb = pop_key(name, "bias_mant")
        bias = A.ints(kb, n, " (one per input neuron)" if name == inp else f" (one per neuron of population {name!r})")
        A.in_range(kb, bias, bmin, bmax, f"{base.bias_mant_bits}-bit signed bias")
        if name == inp:
            top = (255 * A.scalar("input/gain")) >> A.scalar("input/shift")
            if bias.size and int(bias.max()) + top > bmax:
                raise A.fail("input/gain", f"pixel 255 encodes to bias {int(bias.max()) + top} > {bmax} "
                                           f"({base.bias_mant_bits}-bit signed bias)")
    for q in projs:
        name = q["name"]
        kq, kb, ke = (proj_key(name, k) for k in ("qweight", "num_weight_bits", "weight_exp"))
        rows = A.get(proj_key(name, "rows"))
        qw = A.ints(kq, rows.shape[0], f" (as many as {A.name(proj_key(name, 'rows'))})")
        b = A.scalar(kb)
        if b not in profile.weight_bits_allowed:
            raise A.fail(kb, f"value {b} is not among the profile's weight_bits_allowed "
                             f"{profile.weight_bits_allowed} (projection {name!r})")
        lo, hi = weight_range(b, sign_mode_of(qw))
        lo, hi = max(lo, profile.weight_min), min(hi, profile.weight_max)
        step = weight_step(b, sign_mode_of(qw))
        A.in_range(kq, qw, lo, hi, f"{b}-bit weights, projection {name!r}")
        off = np.flatnonzero(qw % step)
        if off.size:
            k = int(off[0])
            raise A.fail(kq, f"index {k}: weight {int(qw[k])} is not a multiple of {step} "
                             f"(the {b}-bit grid the chip keeps; projection {name!r})")
        A.in_range(ke, A.scalar(ke), profile.weight_exp_min, profile.weight_exp_max,
                   "profile weight_exp_min..weight_exp_max")


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
