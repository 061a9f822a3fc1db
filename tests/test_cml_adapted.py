"""CML's co-learner must read the features of the *adapted* extractor (after the inner loop)."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn.functional import cross_entropy

from gnn_cml.meta import CML, MAML
from gnn_cml.sampling.episodes import Episode


def _task(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ways, shots, queries, width = 3, 5, 7, 6
    centres = 2 * torch.randn(ways, width, generator=g)

    def draw(n):
        y = torch.arange(ways).repeat_interleave(n)
        return centres[y] + torch.randn(len(y), width, generator=g), y

    (xs, ys), (xq, yq) = draw(shots), draw(queries)
    return Episode(xs, ys, xq, yq)


def _adapted_encoder_params(encoder, head, episode, steps, lr):
    """The inner loop written out by hand: ``steps`` SGD steps on the support loss, encoder and head."""
    enc = {k: v.detach().clone().requires_grad_() for k, v in encoder.named_parameters()}
    hd = {k: v.detach().clone().requires_grad_() for k, v in head.named_parameters()}
    for _ in range(steps):
        logits = functional_call(head, hd, (functional_call(encoder, enc, (episode.support,)),))
        loss = cross_entropy(logits, episode.support_y)
        grads = torch.autograd.grad(loss, list(enc.values()) + list(hd.values()))
        enc = {k: (v - lr * g).detach().requires_grad_() for (k, v), g in zip(enc.items(), grads[:len(enc)])}
        hd = {k: (v - lr * g).detach().requires_grad_() for (k, v), g in zip(hd.items(), grads[len(enc):])}
    return enc


@pytest.mark.parametrize("first_order", [True, False])
def test_co_learner_reads_adapted_features(first_order):
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 8), nn.Tanh())
    head, co_learner = nn.Linear(8, 3), nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    steps, lr, gamma = 5, 0.5, 0.7
    model = CML(MAML(encoder, head, inner_steps=steps, inner_lr=lr, first_order=first_order), co_learner, gamma)
    episode = _task()

    result = model(episode, train=True)
    co_loss = result.metrics["co_loss"]

    adapted = _adapted_encoder_params(encoder, head, episode, steps, lr)
    with torch.no_grad():
        on_adapted = float(cross_entropy(co_learner(functional_call(encoder, adapted, (episode.query,))),
                                         episode.query_y))
        on_unadapted = float(cross_entropy(co_learner(encoder(episode.query)), episode.query_y))

    # The inner loop is not trivial: the two readings differ clearly ...
    assert abs(on_adapted - on_unadapted) > 1e-2, (on_adapted, on_unadapted)
    # ... and the wrapper's co-learner loss is the one on the adapted features.
    assert co_loss == pytest.approx(on_adapted, rel=1e-4, abs=1e-5)
    assert co_loss != pytest.approx(on_unadapted, rel=1e-3)
    # The outer objective adds gamma times exactly that loss.
    assert float(result.loss.detach()) == pytest.approx(result.metrics["query_loss"] + gamma * on_adapted, rel=1e-5)


def test_co_learner_gradient_reaches_the_encoder_through_the_adapted_features():
    """The co-learner's loss gives the encoder a gradient (gradient augmentation), and gamma scales it."""
    torch.manual_seed(1)
    encoder = nn.Sequential(nn.Linear(6, 8), nn.Tanh())
    head, co_learner = nn.Linear(8, 3), nn.Linear(8, 3)
    episode = _task(1)

    def encoder_grad(gamma):
        model = CML(MAML(encoder, head, inner_steps=3, inner_lr=0.5), co_learner, gamma)
        model.zero_grad()
        model(episode, train=True).loss.backward()
        return torch.cat([p.grad.flatten() for p in encoder.parameters()])

    base, with_co = encoder_grad(0.0), encoder_grad(1.0)
    assert not torch.allclose(base, with_co)
    assert torch.allclose(encoder_grad(2.0) - base, 2 * (with_co - base), atol=1e-5)
