"""GPU-only checks (skipped with a reason on machines without CUDA, e.g. CI): resume on CUDA, and the
captured step computing what the eager step computes."""
from functools import partial

import pytest
import torch

from busnb.data.tensors import SegArrays
from busnb.methods import build_method
from busnb.models import build_model
from busnb.train import TrainConfig, Trainer, seed_everything

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the device machine)")

TINY = dict(encoder="resnet18", decoder_channels=(16, 8, 8))


def _trainer(phantom_small, out, method="supervised", epochs=3, callbacks=(), **kw):
    seed_everything(0)
    lab, val, unl = SegArrays(phantom_small[:6], 64), SegArrays(phantom_small[6:9], 64), SegArrays(phantom_small[9:], 64)
    m = build_method(method, partial(build_model, **TINY))
    cfg = TrainConfig(epochs=epochs, batch_labeled=2, batch_unlabeled=2, steps_per_epoch=4, seed=1, progress=False,
                      plateau_patience=0, device="cuda", **kw)
    return Trainer(m, cfg, lab, val, unl if m.needs_unlabeled else None, out, callbacks=callbacks)


@pytest.mark.parametrize("capture", [False, True])
def test_resume_after_kill_on_cuda(phantom_small, tmp_path, capture):
    """Killed after epoch 1 on the GPU, the same command resumes (the CPU RNG state is restored as a CPU
    tensor; the CUDA states too) and ends where an uninterrupted run ends."""
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    ref = _trainer(phantom_small, tmp_path / "ref", "mean_teacher", capture=capture)
    ref.fit()

    def kill(trainer, row):
        if row["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _trainer(phantom_small, tmp_path / "run", "mean_teacher", callbacks=[kill], capture=capture).fit()
    resumed = _trainer(phantom_small, tmp_path / "run", "mean_teacher", capture=capture)
    resumed.fit()
    assert resumed.epoch == 3 and len(resumed.history) == 3
    a, b = ref.method.state_dict(), resumed.method.state_dict()
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a if a[k].is_floating_point())
    assert worst < 1e-2, worst
    assert [h["lr"] for h in ref.history] == [h["lr"] for h in resumed.history]


@pytest.mark.parametrize("method", ["supervised", "dual_teacher", "mean_teacher", "cps", "bcp-no_largest_cc"])
def test_captured_step_matches_eager(phantom_small, tmp_path, method):
    """Same seed, same batches: the losses of 8 captured steps track the eager ones (bf16 tolerance), and
    parameters move the same way."""
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    runs = {}
    for cap in (False, True):
        t = _trainer(phantom_small, tmp_path / f"{method}-{cap}", method, epochs=2, capture=cap)
        assert t.capture == cap
        t.fit(resume=False)
        runs[cap] = t
    la = [h["loss"] for h in runs[False].history]
    lb = [h["loss"] for h in runs[True].history]
    assert all(abs(x - y) < 0.05 * max(1.0, abs(x)) for x, y in zip(la, lb)), (la, lb)
