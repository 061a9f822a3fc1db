"""The first-order inner loop of a 2-layer GCN + linear head in closed form (the hot path).

Every meta-training episode of the paper protocol runs 20 first-order inner steps on a
task of a few dozen rows; with autograd each step is a graph build and a backward pass
of ~40 tiny operations. Here one step is ~15 tensor operations with hand-derived
gradients, for the encoders whose output is

    e = P (dropout(relu(X W1^T + b1)) W2^T) + b2,    logits = e Wh^T + bh

with ``P`` the episode's ``n x R`` propagation block: ``Â[nodes, N(nodes)]`` for the
row-subset :class:`~gnn_cml.models.GCN`, ``pool @ Â_sub`` for G-Meta's
:class:`~gnn_cml.models.SubgraphGCN` (pooling commutes with the last layer because the
reference GCN has no output activation). ``X`` may be modulated per feature column
(AMM-GNN: ``X diag(s)``). The pre-activation ``Z = X W1^T + b1`` is tracked through the
Gram matrix: a step changes it by ``-lr (X diag(s^2) X^T + 1 1^T) dZ``, so the wide
input rows are multiplied twice per task instead of twice per step.

:meth:`gnn_cml.meta.MAML.adapt` uses this path whenever it applies (first order, or
meta-test where no outer graph is needed) and :func:`applies` (``fast_inner`` on); the autograd path
(``torch.autograd.grad`` / ``torch.func.grad`` on ``functional_call``) stays as the
checked definition, and tests assert both give the same adapted parameters, losses
and meta-gradients (1e-5, float64), dropout masks included.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F

from gnn_cml.models.graph import RowBlock

Params = Dict[str, torch.Tensor]
W1, B1, W2, B2 = ("net.encoder.layers.0.weight", "net.encoder.layers.0.bias",
                  "net.encoder.layers.1.weight", "net.encoder.layers.1.bias")
WH, BH = "net.head.net.1.weight", "net.head.net.1.bias"
KEYS = (W1, B1, W2, B2, WH, BH)
# The Gram matrix of the episode's rows is rows x rows: past this many entries (1 GiB in float32) the
# autograd path runs instead. G-Meta's stacked 2-hop subgraphs reach 10^5 rows on hub nodes of a
# power-law graph of ogbn-arxiv's size (benchmarks/scale_episode.py), an 80 GB Gram matrix. The batched
# runs (gnn_cml/meta/fast.py) read the same bound: a task past it is solved alone, on this autograd path.
MAX_GRAM_ENTRIES = 2 ** 28


def why_not(learner) -> Optional[str]:
    """Why the closed form cannot run ``learner``'s inner loop (None: it can, on tasks whose inputs are
    episode row blocks; :func:`applies` checks a task). The one structural check of the fast path:
    :func:`gnn_cml.meta.fast.why_not_batched` adds what batching needs on top."""
    from gnn_cml.models.encoders import ACTIVATIONS, GCN, SubgraphGCN

    if not getattr(learner, "fast_inner", False):
        return "the closed-form inner loop is off (fast_inner=False)"
    if learner.task_loss is not F.cross_entropy:
        return "the loss is not cross-entropy"
    enc = learner.encoder
    if not (isinstance(enc, (GCN, SubgraphGCN)) and enc.num_layers == 2 and enc.act is ACTIVATIONS["relu"]
            and enc.out_act is ACTIVATIONS["none"]):
        return "only 2-layer GCN / subgraph-GCN encoders with ReLU and no output activation"
    if set(learner.adapt_prefixes) != {"net.encoder.", "net.head."}:
        return "only learners that adapt the whole encoder and head"
    if {k for k, _ in learner.named_parameters() if k.startswith("net.")} != set(KEYS):
        return "only a linear head on the encoder"
    return None


def applies(learner, adapted: Params, inputs, cond, functional: bool) -> bool:
    """Whether :func:`adapt` computes exactly what the autograd inner loop would on this task."""
    return (not functional and why_not(learner) is None and set(adapted) == set(KEYS)
            and (cond is None or set(cond) == {"scale"})
            and isinstance(inputs, dict) and "xw" not in inputs and isinstance(inputs.get("x"), RowBlock)
            and inputs["x"].shape[0] ** 2 <= MAX_GRAM_ENTRIES
            and all(isinstance(b, RowBlock) and b.dense is not None for b in _propagation_parts(learner.encoder, inputs)))


def _propagation_parts(enc, inputs):
    from gnn_cml.models.encoders import SubgraphGCN

    if isinstance(enc, SubgraphGCN):
        return [inputs["pool_adj"]] if "pool_adj" in inputs else [inputs["pool"], inputs["adj"]]
    return list(inputs["adj"])


def propagation(enc, inputs, dtype) -> torch.Tensor:
    """``P`` of the module docstring, from the blocks the encoder's episode inputs hold."""
    parts = [b.dense.to(dtype) for b in _propagation_parts(enc, inputs)]
    return parts[0] if len(parts) == 1 else parts[0] @ parts[1]  # [pool, Â_sub] when not pre-multiplied


def dropout_masks(shape, dropout: float, dtype, device=None) -> Optional[torch.Tensor]:
    """Inverted-dropout masks (kept entries ``1 / (1 - dropout)``) drawn from the default generator
    exactly as ``F.dropout`` draws them, so that ``(steps, rows, hidden)`` masks at once consume
    the stream of one ``F.dropout`` per step; None when ``dropout`` is 0."""
    if dropout <= 0:
        return None
    keep = 1.0 - dropout
    return torch.empty(shape, dtype=dtype, device=device).bernoulli_(keep).div_(keep)


def adapt(learner, adapted: Params, inputs, targets: torch.Tensor, cond, steps: int, lr: float,
          dropout: float) -> Params:
    """``steps`` first-order inner steps in closed form; returns the adapted parameters.

    The update itself is computed without a graph; an adapted parameter is returned as
    ``w + (w' - w).detach()``, so the outer gradient reaches ``w`` through the identity
    (first-order MAML). ``dropout`` > 0 draws one mask per step exactly as ``F.dropout``
    does (same random stream), so a seeded task gives the same masks on both paths.
    """
    if steps == 0:
        return {k: adapted[k] for k in KEYS}
    p = {k: adapted[k].detach() for k in KEYS}
    w1, b1, w2, b2, wh, bh = (p[k] for k in KEYS)
    dtype = w1.dtype
    x: RowBlock = inputs["x"]
    scale: Optional[torch.Tensor] = None if cond is None else cond["scale"].detach().to(dtype)
    w1_in = w1 if scale is None else w1 * scale.reshape(1, -1)
    prop = propagation(learner.encoder, inputs, dtype)
    z = x.matmul(w1_in.t()) + b1
    gram = x.gram(None if scale is None else scale * scale).to(dtype) + 1.0  # + 1 1^T: the bias's share
    masks = dropout_masks((steps,) + tuple(z.shape), dropout, dtype, z.device)
    loop = numpy_steps if z.device.type == "cpu" else torch_steps
    coef, w2, b2, wh, bh = loop(z, gram, prop, targets, w2, b2, wh, bh, masks, steps, lr)
    grad_w1 = x.tmatmul(coef).t()
    if scale is not None:
        grad_w1 = grad_w1 * scale.reshape(1, -1)
    new = {W1: w1 - lr * grad_w1, B1: b1 - lr * coef.sum(0), W2: w2, B2: b2, WH: wh, BH: bh}
    # First order: the outer gradient reaches the meta-parameters through the identity of w - lr * g.
    return {k: adapted[k] + (new[k] - p[k]) if adapted[k].requires_grad else new[k] for k in KEYS}


def torch_steps(z, gram, prop, targets, w2, b2, wh, bh, masks, steps, lr):
    """The inner steps with torch operations (any device)."""
    onehot = F.one_hot(targets, wh.shape[0]).to(z.dtype)
    inv_n = 1.0 / targets.shape[0]
    coef = torch.zeros_like(z)
    for t in range(steps):
        h = torch.relu(z)
        if masks is not None:
            h = h * masks[t]
        u = h @ w2.t()
        e = torch.addmm(b2, prop, u)
        logits = torch.addmm(bh, e, wh.t())
        d_logits = torch.softmax(logits, 1).sub_(onehot).mul_(inv_n)
        d_e = d_logits @ wh
        d_u = prop.t() @ d_e
        d_h = d_u @ w2
        if masks is not None:
            d_h = d_h.mul_(masks[t])
        d_z = d_h.mul_(z > 0)
        wh = wh - lr * (d_logits.t() @ e)
        bh = bh - lr * d_logits.sum(0)
        w2 = w2 - lr * (d_u.t() @ h)
        b2 = b2 - lr * d_e.sum(0)
        z = torch.addmm(z, gram, d_z, alpha=-lr)
        coef = coef + d_z
    return coef, w2, b2, wh, bh


def numpy_steps(z, gram, prop, targets, w2, b2, wh, bh, masks, steps, lr):
    """The same steps on CPU through NumPy: a tiny matrix product costs ~1 µs there against
    several in torch's dispatcher, and a step is ~30 of them (measured: ~5x faster)."""
    import numpy as np

    z, gram, prop = z.numpy().copy(), gram.numpy(), prop.numpy()
    w2, b2, wh, bh = (t.numpy().copy() for t in (w2, b2, wh, bh))
    masks = None if masks is None else masks.numpy()
    onehot = np.eye(wh.shape[0], dtype=z.dtype)[targets.numpy()]
    inv_n = 1.0 / len(onehot)
    prop_t = np.ascontiguousarray(np.swapaxes(prop, -1, -2))
    coef = np.zeros_like(z)
    with np.errstate(all="ignore"):  # diverging weights become inf/NaN silently, as in torch; the Trainer reports it
        numpy_loop(z, gram, prop, prop_t, onehot, inv_n, w2, b2, wh, bh, masks, steps, lr, coef)
    return tuple(torch.from_numpy(a) for a in (coef, w2, b2, wh, bh))


def numpy_loop(z, gram, prop, prop_t, onehot, inv_n, w2, b2, wh, bh, masks, steps, lr, coef):
    """The steps of :func:`numpy_steps`, updating its arrays in place.

    Every array may carry leading batch dimensions (one task per index; ``masks`` then
    ``(steps, *batch, rows, hidden)``): :mod:`gnn_cml.meta.fast` runs many runs'
    tasks through this same loop at once.
    """
    import numpy as np

    def t(a):
        return np.swapaxes(a, -1, -2)

    for step in range(steps):
        h = np.maximum(z, 0)
        if masks is not None:
            h *= masks[step]
        e = prop @ (h @ t(w2))
        e += b2[..., None, :]
        logits = e @ t(wh)
        logits += bh[..., None, :]
        logits -= logits.max(-1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(-1, keepdims=True)
        logits -= onehot
        logits *= inv_n  # now d loss / d logits
        d_e = logits @ wh
        d_u = prop_t @ d_e
        d_z = d_u @ w2
        if masks is not None:
            d_z *= masks[step]
        d_z *= z > 0
        wh -= lr * (t(logits) @ e)
        bh -= lr * logits.sum(-2)
        w2 -= lr * (t(d_u) @ h)
        b2 -= lr * d_e.sum(-2)
        z -= lr * (gram @ d_z)
        coef += d_z
