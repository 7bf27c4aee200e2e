import json
from functools import partial

import pytest
import torch

from busnb.data.tensors import SegArrays
from busnb.methods import build_method
from busnb.models import WeightsUnavailable, build_model, pick_device
from busnb.train import TrainConfig, Trainer, evaluate

TINY = dict(encoder="resnet18", decoder_channels=(16, 8, 8))


def _setup(phantom_small, out, epochs=2, callbacks=()):
    torch.manual_seed(0)
    lab, val = SegArrays(phantom_small[:6], 32), SegArrays(phantom_small[6:9], 32)
    m = build_method("supervised", partial(build_model, **TINY))
    cfg = TrainConfig(epochs=epochs, batch_labeled=2, steps_per_epoch=3, seed=1, progress=False, plateau_patience=0)
    return Trainer(m, cfg, lab, val, None, out, callbacks=callbacks)


def test_resume_after_kill_is_identical(phantom_small, tmp_path):
    ref = _setup(phantom_small, tmp_path / "ref", epochs=3)
    ref.fit()

    def kill(trainer, row):
        if row["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _setup(phantom_small, tmp_path / "run", epochs=3, callbacks=[kill]).fit()
    resumed = _setup(phantom_small, tmp_path / "run", epochs=3)
    resumed.fit()
    a, b = ref.method.state_dict(), resumed.method.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["val_dice"] for h in ref.history] == [h["val_dice"] for h in resumed.history]
    assert ref.opt.param_groups[0]["lr"] == resumed.opt.param_groups[0]["lr"]


def test_selection_uses_validation_only(phantom_small, tmp_path):
    t = _setup(phantom_small, tmp_path / "sel", epochs=3)
    before = {k: v.clone() for k, v in t.method.student.state_dict().items()}
    t.fit()
    hist = json.loads((tmp_path / "sel" / "history.json").read_text())
    best = torch.load(tmp_path / "sel" / "best.pt", weights_only=False)
    assert best["val_dice"] == max(h["val_dice"] for h in hist)
    assert best["epoch"] == max(hist, key=lambda h: h["val_dice"])["epoch"]
    after = t.method.student.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # parameters were trained
    rows = evaluate(t.load_best(), phantom_small[9:11], 32)
    assert len(rows) == 2 and {"dice", "iou", "hd95", "asd", "empty_pred"} <= set(rows[0])


def test_features_are_returned():
    net = build_model(**TINY)
    logits, feats = net(torch.zeros(2, 1, 32, 32), return_features=True)
    assert logits.shape == (2, 1, 32, 32) and feats.shape == (2, 8, 32, 32)


def test_decoder_length_sets_the_encoder_depth_and_unused_stages_are_not_kept():
    from busnb.config import get_profile

    shallow, full = build_model("resnet18", None, (16, 8, 8)), build_model("resnet18", None, (16, 8, 8, 8, 8))
    assert shallow.depth == 3 == get_profile("smoke").encoder_depth and full.depth == 5
    assert not hasattr(shallow.net.encoder, "layer3") and not hasattr(shallow.net.encoder, "layer4")
    assert hasattr(full.net.encoder, "layer4")
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(shallow) < 1_000_000 < 10_000_000 < n(full)
    for net in (shallow, full):  # full-resolution output and decoder features at either depth
        logits, feats = net(torch.rand(2, 1, 32, 32), return_features=True)
        assert logits.shape == (2, 1, 32, 32) and feats.shape == (2, 8, 32, 32)
        assert all(p.grad is None for p in net.parameters())
        logits.sum().backward()
        assert all(p.grad is not None for p in net.parameters())  # every kept parameter is used


def test_imagenet_weights_offline_error(monkeypatch):
    import segmentation_models_pytorch as smp

    def offline(*a, **k):
        if k.get("encoder_weights"):
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return orig(*a, **k)

    orig = smp.Unet
    monkeypatch.setattr(smp, "Unet", offline)
    with pytest.raises(WeightsUnavailable, match="encoder_weights=None"):
        build_model("resnet18", "imagenet")


def test_device_auto_is_valid():
    assert pick_device("auto").type in ("cpu", "cuda", "mps")
    assert pick_device("cpu").type == "cpu"


def test_empty_validation_predictions_are_counted_and_warned(phantom_small, tmp_path, capsys):
    """A network that predicts background everywhere: val_empty = 1 in the history, no warning in the first
    epochs (a young network may predict nothing yet: max(2, epochs // 5)), then one warning, once."""
    t = _setup(phantom_small, tmp_path / "empty", epochs=4)
    head = t.method.student.net.segmentation_head[0]
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.constant_(head.bias, -50.0)
    t.opt = torch.optim.SGD(t.method.student.parameters(), lr=0.0)   # keep it collapsed
    t.sched = torch.optim.lr_scheduler.ReduceLROnPlateau(t.opt, mode="max")
    t.fit(resume=False)
    assert [h["val_empty"] for h in t.history] == [1.0, 1.0, 1.0, 1.0]
    assert t.validate_stats() == (pytest.approx(t.history[-1]["val_dice"]), 1.0)
    err = capsys.readouterr()
    out = err.out + err.err
    assert out.count("empty on 100% of validation images") == 1 and "epoch 3:" in out
