"""Forward and backward pass of a sparse ReLU MLP given as connection lists.

At 1 % connectivity most of a dense weight matrix is zeros, and only active
connections get gradients. Each layer is a list of K (post, pre, weight)
triples; a minibatch of B samples is pushed through with a gather of the
presynaptic activations (B x K) and a ``bincount`` scatter into the
postsynaptic neurons. Gradients are computed only for the K active
connections. Layers denser than ``DENSE_ABOVE`` use a dense matrix product
instead, which wins there (BLAS beats gather/scatter).

Hidden layers are ReLU, the last layer linear; loss is softmax cross-entropy.
No biases (as in the paper's MNIST network).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

DENSE_ABOVE = 0.08  # connectivity above which a layer runs as a dense matmul


@dataclass
class SparseLayer:
    n_in: int
    n_out: int
    rows: np.ndarray  # post index per connection
    cols: np.ndarray  # pre index per connection
    w: np.ndarray  # weight per connection (float64)
    full: bool = False  # every connection present, in row-major order: w is the matrix itself

    @property
    def dense(self) -> bool:
        return self.full or len(self.w) > DENSE_ABOVE * self.n_in * self.n_out

    def matrix(self) -> np.ndarray:
        if self.full:
            return self.w.reshape(self.n_out, self.n_in)
        W = np.zeros((self.n_out, self.n_in))
        W[self.rows, self.cols] = self.w
        return W


def layer_forward(h: np.ndarray, layer: SparseLayer, cache: Optional[dict] = None) -> np.ndarray:
    B = h.shape[0]
    if layer.dense:
        W = layer.matrix()
        if cache is not None:
            cache["W"] = W
        return h @ W.T
    hg = h[:, layer.cols]  # (B, K)
    if cache is not None:
        cache["hg"] = hg
    idx = (layer.rows[None, :] + layer.n_out * np.arange(B)[:, None]).ravel()
    out = np.bincount(idx, weights=(hg * layer.w).ravel(), minlength=B * layer.n_out)
    # float even for a layer left without connections (bincount of nothing is int64)
    return out.astype(np.float64, copy=False).reshape(B, layer.n_out)


def layer_backward(dA: np.ndarray, h: np.ndarray, layer: SparseLayer, cache: dict,
                   need_input_grad: bool) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Gradient w.r.t. each connection's weight, and w.r.t. the layer's input."""
    B = dA.shape[0]
    if layer.dense:
        G = dA.T @ h  # (n_out, n_in)
        gw = G.ravel() if layer.full else G[layer.rows, layer.cols]
        dh = dA @ cache["W"] if need_input_grad else None
        return gw, dh
    dAg = dA[:, layer.rows]  # (B, K)
    gw = np.einsum("bk,bk->k", dAg, cache["hg"])
    dh = None
    if need_input_grad:
        idx = (layer.cols[None, :] + layer.n_in * np.arange(B)[:, None]).ravel()
        dh = np.bincount(idx, weights=(dAg * layer.w).ravel(), minlength=B * layer.n_in).reshape(B, layer.n_in)
    return gw, dh


def forward(x: np.ndarray, layers: Sequence[SparseLayer]) -> np.ndarray:
    """Logits for a batch (no caches: evaluation)."""
    h = x
    for i, layer in enumerate(layers):
        h = layer_forward(h, layer)
        if i < len(layers) - 1:
            np.maximum(h, 0.0, out=h)
    return h


def softmax_xent(logits: np.ndarray, y: np.ndarray) -> Tuple[float, np.ndarray]:
    """Mean cross-entropy and its gradient w.r.t. the logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    p = e / e.sum(axis=1, keepdims=True)
    B = len(y)
    loss = float(-np.mean(np.log(p[np.arange(B), y] + 1e-300)))
    p[np.arange(B), y] -= 1.0
    return loss, p / B


def loss_and_grads(x: np.ndarray, y: np.ndarray, layers: Sequence[SparseLayer]) -> Tuple[float, List[np.ndarray], np.ndarray]:
    """Loss, per-layer weight gradients (one per connection) and the logits."""
    hs = [x]
    caches = []
    h = x
    for i, layer in enumerate(layers):
        cache: dict = {}
        a = layer_forward(h, layer, cache)
        caches.append(cache)
        if i < len(layers) - 1:
            h = np.maximum(a, 0.0)
            hs.append(h)
        else:
            logits = a
    loss, dA = softmax_xent(logits, y)
    grads: List[np.ndarray] = [None] * len(layers)  # type: ignore[list-item]
    for i in range(len(layers) - 1, -1, -1):
        gw, dh = layer_backward(dA, hs[i], layers[i], caches[i], need_input_grad=i > 0)
        grads[i] = gw
        if i > 0:
            dA = dh * (hs[i] > 0)
    return loss, grads, logits


def predict(x: np.ndarray, layers: Sequence[SparseLayer], batch: int = 2000) -> np.ndarray:
    """Class of every sample. A diverged network's overflow (inf / NaN logits) is
    expected and reported once by the trainer, so NumPy's warnings are muted here."""
    out = []
    for s in range(0, len(x), batch):
        with np.errstate(over="ignore", invalid="ignore"):
            out.append(np.argmax(forward(x[s:s + batch], layers), axis=1))
    return np.concatenate(out) if out else np.empty(0, dtype=np.int64)
