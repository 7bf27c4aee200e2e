import torch

from busnb import aurcl as A


def test_threshold_and_selection():
    p = torch.tensor([0.5, 0.55, 0.7, 0.95, 0.99, 0.01, 0.3, 0.9, 1.0, 0.0]).view(1, 1, 2, 5)
    sel, tau = A.low_confidence_mask(p, k_frac=0.1, floor=0.2)  # K = 1 pixel
    # C = |2p-1| = [0, .1, .4, .9, .98, .98, .4, .8, 1, 1]; C_(1) = 0 -> tau = max(0, 0.2) = 0.2
    assert tau.item() == torch.tensor(0.2).item()
    assert sel.flatten().tolist() == [True, True] + [False] * 8
    sel, tau = A.low_confidence_mask(p, k_frac=0.5, floor=0.2)  # K = 5: sorted C = 0, .1, .4, .4, .8, ...
    assert abs(tau.item() - 0.8) < 1e-6 and sel.sum() == 5


def test_reverse_view():
    p = torch.tensor([0.2, 0.6]).view(1, 1, 1, 2)
    rev = A.reverse_view(p, torch.tensor([False, True]).view(1, 1, 1, 2))
    assert torch.allclose(rev.flatten(), torch.tensor([0.2, 0.4]))


def test_info_nce_falls_when_same_location_agrees():
    torch.manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(2, 16, 8), dim=-1)
    aligned = A.info_nce(z, z.clone(), temperature=0.1)
    shuffled = A.info_nce(z, z[:, torch.randperm(16)], temperature=0.1)
    random = A.info_nce(z, torch.nn.functional.normalize(torch.randn(2, 16, 8), dim=-1), temperature=0.1)
    assert aligned < random < shuffled + 1.0 and aligned < 0.5 * random


def test_finite_and_zero_when_nothing_selected():
    head = A.ProjectionHead(4, dim=8)
    feats = torch.randn(2, 4, 28, 28, requires_grad=True)
    logits = torch.full((2, 1, 28, 28), 8.0)  # p ~ 1 everywhere: C ~ 1 > floor...
    loss, maps = A.aurcl_loss(feats, logits, head, k=14, k_frac=0.0001, floor=0.2)
    # ...but K >= 1 pixel is always selected, so force an empty selection through the anchors
    z = A.patch_embed(head(feats, maps["prob"]), 14)
    empty = A.info_nce(z, z, torch.zeros(2, z.shape[1], dtype=torch.bool))
    assert torch.isfinite(loss) and torch.isfinite(empty) and empty.item() == 0.0
    empty.backward()  # no error, zero gradient
    assert feats.grad is None or feats.grad.abs().sum() == 0


def test_loss_shapes_features_not_probabilities():
    head = A.ProjectionHead(4, dim=8)
    feats = torch.randn(1, 4, 28, 28, requires_grad=True)
    logits = torch.zeros(1, 1, 28, 28, requires_grad=True)  # all uncertain
    loss, maps = A.aurcl_loss(feats, logits, head, k=14)
    loss.backward()
    assert maps["selected"].all() and loss.item() > 0
    assert logits.grad is None and feats.grad.abs().sum() > 0
