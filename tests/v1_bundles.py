"""Version-1 bundles for tests: a version-2 chain bundle written back in the version-1 layout
(manifest ``layers`` + ``input_cores``, arrays ``l<i>_*`` / ``in_*``), as deepr-neuro wrote
runs before format version 2. tests/data/bundle_v1_tiny/ is one written by that old code."""
from typing import Any, Dict, Tuple

import numpy as np

from deepr_neuro.store.codec import v1_key_map


def v1_names(manifest: Dict[str, Any]) -> Dict[str, str]:
    """version-2 array name -> version-1 name for the chain of a version-2 manifest."""
    g = manifest["graph"]
    km = v1_key_map([q["name"] for q in g["projections"]], g["populations"][0]["name"])
    return {v: k for k, v in km.items()}


def to_v1(manifest: Dict[str, Any], arrays: Dict[str, np.ndarray]) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
    g = manifest["graph"]
    pops = {p["name"]: p for p in g["populations"]}
    layers = []
    for q in g["projections"]:
        post = pops[q["post"]]
        layers.append({"name": q["name"], "n_in": pops[q["pre"]]["size"], "n_out": post["size"],
                       "budget": q["budget"],
                       "cores": [{"core": c["core"], "post_start": c["start"], "post_stop": c["stop"],
                                  **{k: c[k] for k in ("budget", "capacity", "axon_limit") if k in c}}
                                 for c in post["cores"]]})
    m = {k: v for k, v in manifest.items() if k not in ("graph", "integrity", "version", "format")}
    m["layers"] = layers
    m["input_cores"] = [{"core": c["core"], "post_start": c["start"], "post_stop": c["stop"]}
                        for c in g["populations"][0]["cores"]]
    names = v1_names(manifest)
    return m, {names.get(k, k): v for k, v in arrays.items()}
