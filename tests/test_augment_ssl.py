"""Batch augmentation (busnb.augment), the from-scratch profile, and in-domain SimCLR pretraining (busnb.ssl)."""
import json
from pathlib import Path

import pytest
import torch

from busnb.augment import augment_batch, blur, gamma, speckle, warp
from busnb.config import SettingError, check_overrides, get_profile


def _batch(n=6, s=32):
    g = torch.Generator().manual_seed(0)
    img = torch.rand(n, 1, s, s, generator=g)
    mask = torch.zeros(n, 1, s, s)
    mask[:, :, 8:20, 4:14] = 1  # off-centre, asymmetric: a flip or rotation moves it
    return {"image": img, "mask": mask, "index": torch.arange(n)}


def test_none_is_identity_and_keys_pass_through():
    b = _batch()
    assert augment_batch(b, "none") is b
    assert augment_batch(None, "us") is None
    torch.manual_seed(0)
    out = augment_batch(b, "us")
    assert torch.equal(out["index"], b["index"])
    assert out["image"].shape == b["image"].shape and out["mask"].shape == b["mask"].shape


@pytest.mark.parametrize("kind", ["weak", "us"])
def test_mask_stays_binary_and_moves_with_the_image(kind):
    b = _batch(n=16)
    b["image"] = b["mask"].clone()  # the image is the mask: geometry must move both alike
    torch.manual_seed(1)
    out = augment_batch(b, kind)
    assert set(out["mask"].unique().tolist()) <= {0.0, 1.0}
    moved = (out["mask"] != b["mask"]).flatten(1).any(1)
    assert moved.float().mean() > 0.5, "geometry should move most samples"
    if kind == "weak":  # no intensity change: the image (bilinear) thresholded is the mask (nearest)
        agree = ((out["image"] > 0.5).float() == out["mask"]).float().mean()
        assert agree > 0.97
    else:  # intensity changed too
        assert not torch.equal((out["image"] > 0.5).float(), out["image"])


def test_same_seed_same_augmentation_and_different_seed_differs():
    b = _batch()
    torch.manual_seed(3)
    a1 = augment_batch(b, "us")
    torch.manual_seed(3)
    a2 = augment_batch(b, "us")
    torch.manual_seed(4)
    a3 = augment_batch(b, "us")
    assert torch.equal(a1["image"], a2["image"]) and torch.equal(a1["mask"], a2["mask"])
    assert not torch.equal(a1["image"], a3["image"])


def test_intensity_transforms():
    torch.manual_seed(0)
    img = torch.full((64, 1, 16, 16), 0.5)
    g = gamma(img)
    vals = g[:, 0, 0, 0]
    assert vals.min() < 0.5 < vals.max()  # gamma above and below 1 both drawn
    assert (g.flatten(1).std(1) < 1e-6).all()  # a curve: flat stays flat
    s = speckle(img, max_sigma=0.15)
    assert 0 <= s.min() and s.max() <= 1 and s.flatten(1).std(1).max() > 0.01
    step = torch.zeros(2, 1, 16, 16)
    step[..., 8:] = 1
    bl = blur(step, p=1.0)
    assert 0 < bl[0, 0, 0, 7] < 1 and torch.allclose(bl.sum(), step.sum(), atol=1e-3)  # smooths, keeps mass
    assert torch.equal(blur(step, p=0.0), step)


def test_identity_warp_is_exact():
    b = _batch()
    theta = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(6, 2, 3)
    img, m = warp(b["image"], b["mask"], theta)
    assert torch.allclose(img, b["image"], atol=1e-5) and torch.equal(m, b["mask"])


def test_profile_settings_are_checked():
    assert check_overrides("cpu", {"augment": "us"}) == {"augment": "us"}
    with pytest.raises(SettingError, match="augment"):
        check_overrides("cpu", {"augment": "strong"})
    with pytest.raises(SettingError, match="no such file"):
        check_overrides("cpu", {"encoder_weights": "/nope/encoder.pt"})
    s = get_profile("scratch")
    g = get_profile("gpu")
    assert (s.encoder, s.image_size, s.batch_labeled, s.batch_unlabeled) == (g.encoder, g.image_size, 4, 4)
    assert (s.augment, s.encoder_weights, g.augment, g.encoder_weights) == ("us", "ssl", "none", None)


def test_trainer_rejects_unknown_augmentation(tmp_path):
    from busnb.data.tensors import SegArrays
    from busnb.methods import build_method
    from busnb.models import build_model
    from busnb.train import TrainConfig, Trainer

    arr = SegArrays.from_tensors(torch.zeros(2, 1, 32, 32, dtype=torch.uint8), torch.zeros(2, 1, 32, 32, dtype=torch.bool))
    m = build_method("supervised", lambda: build_model("resnet18", None, (16, 16, 16)))
    with pytest.raises(ValueError, match="augment='flip'"):
        Trainer(m, TrainConfig(augment="flip", progress=False), arr, arr, None, tmp_path)


@pytest.fixture()
def iso_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BUSNB_CACHE", str(tmp_path / "cache"))
    return tmp_path


def _parts(seed=0):
    from busnb.experiment import prepare

    return prepare(get_profile("smoke"), ratio=2.5, seed=seed)


def test_simclr_pretraining_is_cached_resumable_and_reads_no_val_or_test(iso_cache, monkeypatch):
    import busnb.data.tensors as T
    from busnb.ssl import SSLConfig, encoder_dir, pretrain_encoder

    parts = _parts()
    pool = {s.id for s in parts["labeled"] + parts["unlabeled"]}
    read = []
    orig = T.load_pair
    monkeypatch.setattr(T, "load_pair", lambda s: (read.append(s.id), orig(s))[1])
    cfg = SSLConfig(epochs=2, batch=16)
    before = torch.random.get_rng_state()
    path = pretrain_encoder(parts, "resnet18", 32, cfg, progress=False, depth=3)
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's random stream is untouched
    assert set(read) == pool  # the train pool, nothing from val or test
    info = json.loads((path.parent / "info.json").read_text())
    assert len(info["losses"]) == 2 and info["n_images"] == len(pool)
    state = torch.load(path, weights_only=True)

    # cached: a second call trains nothing
    read.clear()
    assert pretrain_encoder(parts, "resnet18", 32, cfg, progress=False, depth=3) == path and read == []

    # resume: a run stopped after its first epoch and restarted gives the same encoder as one run through
    import busnb.ssl as ssl_mod

    monkeypatch.setenv("BUSNB_CACHE", str(iso_cache / "cache2"))
    saves = []
    real_save = ssl_mod.torch_save

    def stop_after_first_epoch(obj, p):
        real_save(obj, p)
        saves.append(p)
        if len(saves) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(ssl_mod, "torch_save", stop_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        pretrain_encoder(parts, "resnet18", 32, cfg, progress=False, depth=3)
    assert (encoder_dir(parts, "resnet18", 32, cfg, 3) / "last.pt").is_file()
    again = torch.load(pretrain_encoder(parts, "resnet18", 32, cfg, progress=False, depth=3), weights_only=True)
    assert all(torch.equal(again[k], state[k]) for k in state)


def test_encoder_weights_path_and_ssl_start_every_network_from_the_encoder(iso_cache):
    from busnb.experiment import net_factory, resolve_encoder
    from busnb.models import build_model
    from busnb.ssl import load_encoder

    parts = _parts()
    prof = get_profile("smoke", encoder_weights="ssl", ssl_epochs=1, image_size=32)
    with pytest.raises(ValueError, match="resolved by the experiment"):
        net_factory(prof)()
    built = resolve_encoder(prof, parts, progress=False)
    assert built.encoder_weights.endswith("encoder.pt")
    enc = torch.load(built.encoder_weights, weights_only=True)
    a, b = net_factory(built)(), net_factory(built)()
    for k, v in enc.items():
        assert torch.equal(a.net.encoder.state_dict()[k], v) and torch.equal(b.net.encoder.state_dict()[k], v)
    assert not torch.equal(net_factory(built, init=False)().net.encoder.conv1.weight, enc["conv1.weight"])
    for enc_name, dec in (("resnet34", (16, 16, 16)), ("resnet18", (16, 16, 16, 16, 16))):  # other net, depth
        with pytest.raises(ValueError, match="does not fit"):
            load_encoder(build_model(enc_name, None, dec), built.encoder_weights)
    with pytest.raises(FileNotFoundError, match="busnb pretrain"):
        build_model("resnet18", str(iso_cache / "missing" / "encoder.pt"))


def test_run_with_ssl_and_augmentation_is_reproducible(iso_cache):
    from busnb.experiment import run_experiment

    prof = get_profile("smoke", encoder_weights="ssl", ssl_epochs=1, augment="us", epochs=1, steps_per_epoch=2,
                       image_size=32)
    r1 = run_experiment(prof, "supervised", out_dir=iso_cache / "a", progress=False)
    r2 = run_experiment(prof, "supervised", out_dir=iso_cache / "b", progress=False)
    assert r1["test"]["dice"] == r2["test"]["dice"]
    assert r1["encoder_weights"].endswith("encoder.pt") and r1["encoder_weights"] == r2["encoder_weights"]
    w1 = torch.load(iso_cache / "a" / "best.pt", weights_only=False)["net"]
    w2 = torch.load(iso_cache / "b" / "best.pt", weights_only=False)["net"]
    assert all(torch.equal(w1[k], w2[k]) for k in w1)


def test_pretrain_check_compares_the_encoder_with_a_random_one(iso_cache, capsys):
    """`busnb pretrain --check`: the label-free 1-NN check of the stored encoder, written beside it; the random
    reference is drawn in its own RNG stream, and the SSL column embeds the encoder at the given path (an
    encoder.pt holding the random encoder's weights scores exactly as the random one)."""
    from busnb.cli import main
    from busnb.models import build_model
    from busnb.ssl import SSLConfig, chance_agreement, encoder_dir, neighbour_check, train_pool

    assert main(["pretrain", "--profile", "smoke", "--set", "image_size=32", "--epochs", "1", "--batch", "16",
                 "--check"]) == 0
    parts = _parts()
    prof = get_profile("smoke", image_size=32)
    folder = encoder_dir(parts, prof.encoder, 32, SSLConfig(epochs=1, batch=16), prof.encoder_depth)
    check = json.loads((folder / "check.json").read_text())
    pool = train_pool(parts)
    assert check["n_images"] == len(pool) and check["chance"] == round(chance_agreement([s.cls for s in pool]), 4)
    assert "1-NN same class" in capsys.readouterr().out
    before = torch.random.get_rng_state()
    again = neighbour_check(pool, folder / "encoder.pt", prof.encoder, 32, prof.decoder_channels)
    assert again == check and torch.equal(torch.random.get_rng_state(), before)
    torch.manual_seed(0)  # the random reference's draw, saved as an encoder file
    rnd = build_model(prof.encoder, None, prof.decoder_channels).net.encoder.state_dict()
    torch.save(rnd, iso_cache / "random.pt")
    same = neighbour_check(pool, iso_cache / "random.pt", prof.encoder, 32, prof.decoder_channels)
    assert same["ssl_encoder"] == same["random_encoder"] == check["random_encoder"]


def test_masked_view_hides_the_asked_share_of_grid_cells_and_the_loss_counts_only_them():
    from busnb.ssl import masked_mse, masked_view

    torch.manual_seed(0)
    x = torch.rand(3, 1, 32, 32)
    xm, m = masked_view(x, grid=8, ratio=0.6)
    assert m.shape == (3, 1, 32, 32)
    cells = m[:, 0, ::4, ::4]  # one pixel per 4 x 4 cell
    assert torch.equal(m, cells.repeat_interleave(4, 1).repeat_interleave(4, 2).unsqueeze(1))  # whole cells
    n_hidden = 64 - int(64 * (1 - 0.6))
    assert cells.flatten(1).sum(1).tolist() == [n_hidden] * 3
    assert not torch.equal(cells[0], cells[1])  # drawn per image
    assert torch.equal(xm[m == 0], x[m == 0]) and not torch.equal(xm[m == 1], x[m == 1])
    # wrong only where visible: no loss; wrong where hidden: the mean squared error over hidden pixels
    assert masked_mse(torch.where(m == 0, 1 - x, x), x, m) == 0
    err = masked_mse(torch.where(m == 1, x + 0.5, x), x, m)
    assert torch.isclose(err, torch.tensor(0.25))


def test_restore_pretrains_encoder_and_decoder_and_runs_start_from_both(iso_cache):
    """ssl_method=restore: unet.pt holds the encoder and decoder (no output layer); every network of a run starts
    from both; weights for other decoder widths are refused with the file named; the cache key follows the method
    and the decoder widths."""
    from busnb.experiment import net_factory, resolve_encoder
    from busnb.models import build_model
    from busnb.ssl import SSLConfig, encoder_key

    parts = _parts()
    prof = get_profile("smoke", encoder_weights="ssl", ssl_epochs=1, image_size=32, ssl_method="restore")
    built = resolve_encoder(prof, parts, progress=False)
    assert built.encoder_weights.endswith("unet.pt") and "-restore-" in built.encoder_weights
    state = torch.load(built.encoder_weights, weights_only=True)
    assert any(k.startswith("decoder.") for k in state) and any(k.startswith("encoder.") for k in state)
    assert not any(k.startswith("segmentation_head.") for k in state)
    info = json.loads((Path(built.encoder_weights).parent / "info.json").read_text())
    assert info["decoder_channels"] == list(prof.decoder_channels) and info["ssl"]["method"] == "restore"
    torch.manual_seed(1)
    a = net_factory(built)()
    torch.manual_seed(2)
    b = net_factory(built)()
    for k, v in state.items():
        assert torch.equal(a.net.state_dict()[k], v) and torch.equal(b.net.state_dict()[k], v)
    head = "segmentation_head.0.weight"
    assert not torch.equal(a.net.state_dict()[head], b.net.state_dict()[head])  # the output layer stays fresh
    with pytest.raises(ValueError, match=r"unet\.pt does not fit this network's encoder and decoder"):
        build_model(prof.encoder, built.encoder_weights, (16, 16, 16))
    cfg = SSLConfig(epochs=1, method="restore")
    k1 = encoder_key(parts, "resnet18", 32, cfg, 3, (32, 16, 8))[0]
    assert k1 != encoder_key(parts, "resnet18", 32, cfg, 3, (16, 16, 16))[0]
    assert k1 != encoder_key(parts, "resnet18", 32, SSLConfig(epochs=1), 3)[0]
    with pytest.raises(ValueError, match="decoder_channels"):
        encoder_key(parts, "resnet18", 32, cfg, 3)
    with pytest.raises(SettingError, match="ssl_method='mae'"):
        get_profile("smoke", ssl_method="mae")
    with pytest.raises(ValueError, match="ssl method"):
        SSLConfig(method="byol")


def test_simclr_restore_trains_the_decoder_on_the_cached_simclr_encoder_left_frozen(iso_cache):
    """ssl_method=simclr+restore: the SimCLR stage of the same inputs is reused from the cache (not retrained), and
    unet.pt carries that encoder exactly - weights and batch-norm statistics, which a training-mode encoder would
    have moved - with a decoder trained on top of it; its key records the encoder it read."""
    from busnb.experiment import resolve_encoder
    from busnb.ssl import SSLConfig, encoder_dir

    parts = _parts()
    prof = get_profile("smoke", encoder_weights="ssl", ssl_epochs=1, image_size=32)
    simclr = Path(resolve_encoder(prof, parts, progress=False).encoder_weights)
    first = torch.load(simclr, weights_only=True)
    stamp = simclr.stat().st_mtime_ns
    both = resolve_encoder(get_profile("smoke", encoder_weights="ssl", ssl_epochs=1, image_size=32,
                                       ssl_method="simclr+restore"), parts, progress=False)
    assert both.encoder_weights.endswith("unet.pt") and "-simclr+restore-" in both.encoder_weights
    assert simclr.stat().st_mtime_ns == stamp  # the SimCLR stage was read, not pretrained again
    state = torch.load(both.encoder_weights, weights_only=True)
    assert any(k.endswith("running_mean") for k in first)
    for k, v in first.items():
        assert torch.equal(state[f"encoder.{k}"], v), k
    assert any(k.startswith("decoder.") for k in state) and not any(k.startswith("segmentation_head.") for k in state)
    info = json.loads((Path(both.encoder_weights).parent / "info.json").read_text())
    assert info["encoder_from"] == simclr.parent.name and len(info["losses"]) == 1
    # the restore-only result is another stage: its encoder was trained by the restoration
    alone = encoder_dir(parts, "resnet18", 32, SSLConfig(epochs=1, method="restore"), 3, prof.decoder_channels)
    assert alone != Path(both.encoder_weights).parent
