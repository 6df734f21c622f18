"""A trained recurrent run as a bundle per the R1/R2 contract (until `train` writes them).

Trains H6's model (``training.recurrent.train_recurrent``, dense or with masks)
on spoken digits for a few epochs and writes a version-2 bundle: graph
populations ``input``/``rec``/``out``, projections ``in_rec``/``rec_rec``/``rec_out``
with float32 weights in threshold units, ``pop/<name>/core``, manifest
``model.kind = recurrent`` and the ``recurrent`` block. Placement: input on
core 0, rec split over ``rec_cores`` cores, out on the next core; each core's
budget K_c is its synapse count (over every projection into it).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import numpy as np

from deepr_neuro.hardware.profile import load_profile, profile_to_dict
from deepr_neuro.network.frame_encoding import FrameEncoding
from deepr_neuro.store.bundle import save_bundle
from deepr_neuro.training.recurrent import (LifParams, RecurrentModel, RecurrentSpec, evaluate,
                                            train_recurrent)
from deepr_neuro.training.sequences import load_sequences

ROOT = Path(__file__).resolve().parents[1]


def train_tiny(n_rec: int = 16, epochs: int = 1, seed: int = 0, connectivity: Optional[float] = None,
               data=None):
    """(model, data, test accuracy): H6's model, a few epochs on spoken digits."""
    data = data if data is not None else load_sequences("spoken-digits", seed=seed)
    enc = FrameEncoding(steps_per_frame=2, scale=2.0, signed=True)
    spec = RecurrentSpec(n_in=enc.n_channels(data.n_features), n_rec=n_rec, n_out=data.n_classes,
                         encoding=enc, rec=LifParams.from_tau(4.0, 16.0))
    masks = None
    if connectivity is not None:
        rng = np.random.default_rng(seed)
        masks = {k: (rng.random(m.shape) < connectivity) & m for k, m in spec.potential().items()}
    model = RecurrentModel.init(spec, seed=seed, in_scale=3.0, rec_scale=1.0, out_scale=0.1, masks=masks)
    res = train_recurrent(model, data, epochs=epochs, lr=3e-3, batch_size=32, seed=seed, eval_test=False)
    return model, data, res


def _cores(n: int, first: int, parts: int):
    bounds = np.linspace(0, n, parts + 1).astype(int)
    return [{"core": first + i, "start": int(a), "stop": int(b)} for i, (a, b) in enumerate(zip(bounds, bounds[1:]))
            if b > a]


def write_recurrent_bundle(run_dir, model: RecurrentModel, data, *, profile: str = "loihi2",
                           rec_cores: int = 2, seed: int = 0, val_fraction: float = 0.1,
                           weight_bits: Optional[int] = None) -> Path:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    prof = load_profile(str(ROOT / "hardware_profiles" / f"{profile}.yaml"))
    spec = model.spec
    sizes = {"input": spec.n_in, "rec": spec.n_rec, "out": spec.n_out}
    cores = {"input": _cores(spec.n_in, 0, 1), "rec": _cores(spec.n_rec, 1, rec_cores)}
    cores["out"] = _cores(spec.n_out, 1 + len(cores["rec"]), 1)
    ends = {"in_rec": ("input", "rec"), "rec_rec": ("rec", "rec"), "rec_out": ("rec", "out")}
    arrays: Dict[str, np.ndarray] = {}
    core_of = {}
    for name, cs in cores.items():
        c = np.empty(sizes[name], np.int32)
        for b in cs:
            c[b["start"]:b["stop"]] = b["core"]
        core_of[name] = c
        arrays[f"pop/{name}/core"] = c
    W = model.effective()
    for name, (pre, post) in ends.items():
        pre_idx, post_idx = np.nonzero(model.masks[name])
        order = np.lexsort((pre_idx, post_idx))
        rows, cols = post_idx[order], pre_idx[order]
        arrays[f"proj/{name}/rows"] = rows.astype(np.int32)
        arrays[f"proj/{name}/cols"] = cols.astype(np.int32)
        arrays[f"proj/{name}/weight"] = W[name][cols, rows].astype(np.float32)
    pops = []
    for name, role in (("input", "input"), ("rec", "hidden"), ("out", "readout")):
        blocks = []
        for b in cores[name]:
            if name != "input":
                on = sum(int(np.sum(core_of[name][arrays[f"proj/{q}/rows"]] == b["core"]))
                         for q, (_, post) in ends.items() if post == name)
                b = dict(b, budget=on)
            blocks.append(b)
        pops.append({"name": name, "size": sizes[name], "role": role, "cores": blocks})
    projs = [{"name": q, "pre": pre, "post": post, "budget": int(arrays[f"proj/{q}/rows"].size),
              **({"allow_self": False} if q == "rec_rec" else {})} for q, (pre, post) in ends.items()]
    val = evaluate(model, data.x_val, data.len_val, data.y_val)
    test = evaluate(model, data.x_test, data.len_test, data.y_test)
    manifest = {
        "profile": profile_to_dict(prof), "profile_path": f"hardware_profiles/{profile}.yaml",
        "model": {"kind": "recurrent", "input_size": spec.n_in, "recurrent": {"size": spec.n_rec},
                  "output_size": spec.n_out},
        "graph": {"populations": pops, "projections": projs, "readout": "out"},
        "training": {"seed": seed, "val_fraction": val_fraction, "data_dir": None, "weight_bits": weight_bits},
        "seed": seed,
        "dataset": data.info(),
        "metrics": {"val_accuracy": val, "test_accuracy": test,
                    "connections": int(sum(int(m.sum()) for m in model.masks.values()))},
        "recurrent": {
            "encoding": spec.encoding.info(),
            "normalisation": {k: [float(v) for v in np.asarray(data.norm[k]).ravel()]
                              for k in ("mean", "std") if k in (data.norm or {})},
            "readout": "final_v", "nonlinearity": spec.kind,
            "neurons": {"rec": {"du": int(spec.rec.du), "dv": int(spec.rec.dv), "vth": int(spec.rec.vth)},
                        "out": {"du": int(spec.out.du), "dv": int(spec.out.dv), "vth": int(spec.out.vth)}},
            "steps_per_frame": int(spec.encoding.steps_per_frame),
        },
    }
    save_bundle(run_dir, manifest, arrays)
    return run_dir
