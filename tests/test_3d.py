"""3D setting (busnb.vol): phantom, patch sampler, sliding window, 3D metrics, the one trainer on volumes."""
import json
import math
from functools import partial

import numpy as np
import pytest
import torch

from busnb.config import get_profile
from busnb.vol.arrays import VolumeArrays, random_crop
from busnb.vol.metrics import score_volume
from busnb.vol.nets import build_volume_model
from busnb.vol.phantom import SHAPES_3D, Phantom3DConfig, lesion_mask_3d, make_phantom3d, render_volume

TINY3D = partial(build_volume_model, "unet3d", None, (2, 2, 4, 4, 8, 2))


pytestmark = pytest.mark.usefixtures("one_thread")


def test_phantom_volumes_shapes_labels_and_seeding():
    cfg = Phantom3DConfig(n_volumes=3, size=24, seed=0)
    vols, masks, recs = make_phantom3d(cfg)
    assert vols.shape == masks.shape == (3, 24, 24, 24) and vols.dtype == np.uint8 and masks.dtype == bool
    for v, m, les in zip(vols, masks, recs):
        assert 0.002 < m.mean() < 0.2                       # one or two lesions, not the whole volume
        assert all(r["shape"] in SHAPES_3D for r in les) and sum(r["voxels"] for r in les) == m.sum()
        assert v[m].mean() < v[~m].mean() - 10               # hypoechoic
        assert v.std() > 20                                  # speckled, not flat
    again = render_volume(cfg, 1)
    assert np.array_equal(again[0], vols[1]) and np.array_equal(again[1], masks[1])
    other = render_volume(Phantom3DConfig(n_volumes=3, size=24, seed=1), 1)
    assert not np.array_equal(other[0], vols[1])


def test_lesion_shapes():
    rng = np.random.default_rng(0)
    e = lesion_mask_3d("ellipsoid", 40, (20, 20, 20), (6, 5, 8), rng)
    assert abs(e.sum() / (4 / 3 * math.pi * 6 * 5 * 8) - 1) < 0.1
    lob = lesion_mask_3d("lobulated", 40, (20, 20, 20), (6, 5, 8), np.random.default_rng(0))
    assert lob.any() and (lob ^ e).sum() > 0.1 * e.sum()    # lobes change the outline
    with pytest.raises(ValueError, match="shape"):
        lesion_mask_3d("cube", 10, (5, 5, 5), (2, 2, 2), rng)


def test_patch_sampler_crops_aligned_slices():
    v = (np.arange(2 * 6 * 7 * 8) % 251).reshape(2, 6, 7, 8).astype(np.uint8)
    arrays = VolumeArrays(v, v % 3 == 0, patch=(3, 4, 5))
    torch.manual_seed(0)
    b = arrays.batch([1, 0, 1])
    assert b["image"].shape == b["mask"].shape == (3, 1, 3, 4, 5)
    img = (b["image"] * 255).round().long()
    for k, i in enumerate([1, 0, 1]):
        full = torch.from_numpy(v[i]).long()
        hits = [(z, y, x) for z in range(4) for y in range(4) for x in range(4)
                if torch.equal(full[z:z + 3, y:y + 4, x:x + 5], img[k, 0])]
        assert hits                                           # a true sub-block of that volume
        assert torch.equal((img[k, 0] % 3 == 0).float(), b["mask"][k, 0])  # mask cropped at the same place
    g = torch.Generator().manual_seed(3)
    a1, _ = random_crop(torch.from_numpy(v)[:, None], torch.from_numpy(v)[:, None], (3, 4, 5), generator=g)
    g = torch.Generator().manual_seed(3)
    a2, _ = random_crop(torch.from_numpy(v)[:, None], torch.from_numpy(v)[:, None], (3, 4, 5), generator=g)
    assert torch.equal(a1, a2)
    whole = arrays.whole().batch([0])
    assert whole["image"].shape == (1, 1, 6, 7, 8)


def test_volume_arrays_reject_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        VolumeArrays(np.zeros((1, 4, 4, 4), np.float32), np.zeros((1, 4, 4, 4), bool))
    with pytest.raises(ValueError, match="patch"):
        VolumeArrays(np.zeros((1, 4, 4, 4), np.uint8), np.zeros((1, 4, 4, 4), bool), patch=(8, 4, 4))


def test_sliding_window_returns_full_size_output():
    net = torch.nn.Conv3d(1, 1, 1)                 # pointwise: windows and whole volume must agree exactly
    arrays = VolumeArrays(np.zeros((1, 20, 24, 28), np.uint8), np.zeros((1, 20, 24, 28), bool), roi=(16, 16, 16))
    x = torch.rand(2, 1, 20, 24, 28)
    out = arrays.infer(net, x)
    assert out.shape == x.shape
    assert torch.allclose(out, net(x), atol=1e-5)


def test_3d_metrics_on_hand_made_volumes():
    a = np.zeros((10, 10, 10), bool)
    b = np.zeros_like(a)
    a[5, 5, 5], b[5, 5, 8] = True, True               # single voxels 3 apart
    r = score_volume(a, b)
    assert r["dice"] == 0 and r["hd95"] == pytest.approx(3.0) and r["asd"] == pytest.approx(3.0)
    assert score_volume(a, b, spacing=(1, 1, 2))["hd95"] == pytest.approx(6.0)   # anisotropic voxels
    s1, s2 = np.zeros((10, 10, 10), bool), np.zeros((10, 10, 10), bool)
    s1[2:4], s2[5:7] = True, True                    # two 2-voxel-thick slabs: distances 2 and 3, half each
    r = score_volume(s1, s2)
    assert r["asd"] == pytest.approx(2.5) and r["hd95"] == pytest.approx(3.0)
    cube = np.zeros((12, 12, 12), bool)
    cube[3:9, 3:9, 3:9] = True
    shifted = np.roll(cube, 2, axis=2)
    r = score_volume(cube, shifted)
    assert r["dice"] == pytest.approx(2 * 6 * 6 * 4 / (2 * 216)) and r["iou"] == pytest.approx(144 / 288)
    same = score_volume(cube, cube)
    assert same["dice"] == 1 and same["hd95"] == 0 and same["asd"] == 0
    empty = np.zeros_like(cube)
    miss = score_volume(empty, cube)
    assert miss["dice"] == 0 and miss["hd95"] == pytest.approx(math.sqrt(3) * 12) and miss["empty_pred"]
    assert score_volume(empty, empty)["dice"] == 1 and math.isnan(score_volume(empty, cube, "nan")["hd95"])


def test_dual_uncertainty_trains_in_3d_through_the_one_trainer(tmp_path):
    from busnb.methods import build_method
    from busnb.train import TrainConfig, Trainer

    vols, masks, _ = make_phantom3d(Phantom3DConfig(n_volumes=3, size=32, seed=0))
    lab = VolumeArrays(vols[:1], masks[:1], patch=(32, 32, 32))
    unl = VolumeArrays(vols[1:2], masks[1:2], patch=(32, 32, 32))
    val = VolumeArrays(vols[2:], masks[2:], roi=(32, 32, 32))
    torch.manual_seed(0)
    m = build_method("dual_uncertainty", TINY3D)
    assert (m.student.arch, m.second.arch) == ("unet3d", "segresnet")
    before = [p.clone() for p in m.trainable()]
    t = Trainer(m, TrainConfig(epochs=1, batch_labeled=1, batch_unlabeled=1, steps_per_epoch=1, progress=False),
                lab, val, unl, tmp_path)
    t.fit(resume=False)
    h = t.history[-1]
    assert all(math.isfinite(v) for v in h.values() if isinstance(v, float))
    assert {"Ls", "Lu", "Lc", "Lcos", "keep"} <= set(h) and 0 <= h["val_dice"] <= 1
    changed = [not torch.equal(a, b) for a, b in zip(before, m.trainable())]
    n_a = len(list(m.student.parameters()))
    assert any(changed[:n_a]) and any(changed[n_a:])        # both networks were optimised


def test_partner_head_can_always_reach_a_lesion_logit():
    """MONAI's SegResNet head is norm -> ReLU -> 1x1 conv: with every conv weight negative its logit can never
    exceed the bias. The dual-network partner drops that ReLU, so the same weights still reach any logit."""
    torch.manual_seed(0)
    x = torch.randn(2, 1, 16, 16, 16)
    for arch, stuck in (("segresnet", True), ("partner", False)):
        net = build_volume_model("unet3d", None, (2, 2, 4, 4, 8, 2), arch=arch).eval()
        conv = net.net.conv_final[2].conv
        with torch.no_grad():
            conv.weight.copy_(-conv.weight.abs() - 0.1)
            conv.bias.fill_(-0.03)
            logits, feats = net(x, return_features=True)
        assert feats.shape[1] == 8 and logits.shape == (2, 1, 16, 16, 16)
        assert (logits.max() <= -0.03 + 1e-6) == stuck


def test_volume_experiment_writes_metrics(tmp_path):
    from busnb.vol.experiment import run_volume_experiment, split_volumes

    sp = split_volumes(10, 25, seed=0)
    assert sorted(sp["train"] + sp["val"] + sp["test"]) == list(range(10))
    assert set(sp["labeled"]) | set(sp["unlabeled"]) == set(sp["train"]) and len(sp["labeled"]) == 2
    assert set(split_volumes(10, 50, 0)["labeled"]) >= set(sp["labeled"])  # nested across ratios
    prof = get_profile("smoke3d", epochs=1, steps_per_epoch=1, decoder_channels=(2, 2, 4, 4, 8, 2),
                       phantom={"n_images": 6, "size": 36})
    r = run_volume_experiment(prof, "supervised", 25, 0, tmp_path / "run", progress=False)
    stored = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert stored["test"]["n"] == r["n_test"] == 1 and {"dice", "hd95", "asd"} <= set(stored["test"])
    assert (tmp_path / "run" / "test_per_volume.csv").is_file() and (tmp_path / "run" / "best.pt").is_file()
    again = run_volume_experiment(prof, "supervised", 25, 0, tmp_path / "run", progress=False)  # finished: reused
    assert again["test"] == stored["test"]
    with pytest.raises(ValueError, match="2D"):
        run_volume_experiment(get_profile("smoke"), "supervised", 25, 0, tmp_path / "x", progress=False)


def test_busnb_train_dispatches_3d_profiles(tmp_path, capsys):
    """``busnb train --profile smoke3d`` trains on volumes (3D metrics); a 2D dataset with a 3D profile is refused
    with an error naming the fix; ``python -m busnb.vol train`` is the same command with 3D defaults."""
    from busnb.cli import main
    from busnb.vol.__main__ import main as vol_main

    sets = ["--set", "epochs=1", "--set", "steps_per_epoch=1", "--set", "decoder_channels=2,2,4,4,8,2",
            "--set", 'phantom={"n_images": 6, "size": 36}']
    assert main(["train", "--profile", "smoke3d", "--method", "supervised", "--ratio", "25", *sets,
                 "--out", str(tmp_path / "r")]) == 0
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert {"dice", "hd95", "asd"} <= set(m["test"]) and (tmp_path / "r" / "test_per_volume.csv").is_file()
    assert main(["train", "--profile", "smoke3d", "--dataset", "busi", *sets, "--out", str(tmp_path / "x")]) == 2
    assert "3D phantom" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert vol_main(["train", "--method", "supervised", "--ratio", "25", "--profile", "smoke3d", *sets,
                     "--out", str(tmp_path / "r")]) == 0  # finished run of the same identity: reused
