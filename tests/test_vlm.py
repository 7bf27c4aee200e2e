"""DuSSS: loss terms on hand-made tensors, the VLM, texts (no val/test/unlabeled mask read), the pretraining stage,
the tiny transformers path offline, and a dusss training step through the trainer on phantom data."""
import json
import math
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from busnb.data.record import Sample
from busnb.data.tensors import SegArrays
from busnb.models import build_model
from busnb.vlm import losses as L
from busnb.vlm.model import VLM, ModelNotFound, momentum_update, tiny_bert, word_tokenizer
from busnb.vlm.texts import VOCAB, check_words, describe, mask_facts, pool_texts

TINY = partial(build_model, "resnet18", None, (16, 8, 8))


def _unit(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)


# -- loss terms ---------------------------------------------------------------------------------------------
def test_symmetric_infonce_is_symmetric_and_rewards_alignment():
    a, b = _unit(6, 8, 0), _unit(6, 8, 1)
    assert torch.allclose(L.symmetric_infonce(a, b), L.symmetric_infonce(b, a))
    aligned = L.symmetric_infonce(a, a)
    assert aligned < L.symmetric_infonce(a, b)
    assert aligned < L.symmetric_infonce(a, a[torch.tensor([1, 0, 3, 2, 5, 4])])
    # one-hot soft targets equal the hard-label form
    assert torch.allclose(L.symmetric_infonce(a, b, targets=torch.eye(6)), L.symmetric_infonce(a, b))


def test_w2_similarity_of_identical_gaussians_is_maximal():
    mu, sig = _unit(5, 8, 2), torch.rand(5, 8) * 0.3 + 0.05
    w2 = L.w2_squared(mu, sig, mu, sig)
    assert torch.allclose(w2.diagonal(), torch.zeros(5), atol=1e-5)
    sim = L.w2_similarity(mu, sig, mu, sig)
    assert torch.allclose(sim.diagonal(), torch.ones(5), atol=1e-5)
    assert (sim.diagonal()[:, None] >= sim).all()
    # same mean, other sigma: lower similarity
    assert L.w2_similarity(mu[:1], sig[:1], mu[:1], sig[:1] + 0.5) < 1 - 1e-3
    # W2^2 = ||mu1 - mu2||^2 + ||sigma1 - sigma2||^2
    expect = (mu[0] - mu[1]).pow(2).sum() + (sig[0] - sig[1]).pow(2).sum()
    assert torch.allclose(w2[0, 1], expect, atol=1e-5)


def test_sss_targets_soften_as_sigma_grows_and_same_text_same_target():
    mu = _unit(4, 8, 3)
    mu = torch.cat([mu, mu[:1]])  # sentence 4 = sentence 0
    ids = torch.tensor([[1, 5], [1, 6], [1, 7], [1, 8], [1, 5]])
    same = L.same_sentence(ids)
    assert same[0, 4] and same[4, 0] and not same[0, 1]
    ent = []
    for s in (0.01, 0.5, 2.0):
        q = L.sss_targets(mu, torch.full((5, 8), s), same=same)
        assert torch.allclose(q.sum(1), torch.ones(5))
        assert torch.allclose(q[0, 4], q[0, 0]) and torch.allclose(q[4, 0], q[4, 4])  # same text, same target
        ent.append(float(-(q * q.log()).sum(1).mean()))
    assert ent[0] < ent[1] < ent[2]
    # random encoders (every embedding alike): the targets are not uniform, the own sentence keeps half
    q0 = L.sss_targets(torch.ones(4, 8) / 8 ** 0.5, torch.full((4, 8), 0.1))
    assert torch.allclose(q0.diagonal(), torch.full((4,), 0.5 + 0.5 / 4))


def test_dcl_loss_terms_follow_the_switches():
    torch.manual_seed(0)
    v = VLM(dim=16, text_hidden=16, text_layers=1)
    tok = v.text.tokenize(["a dark oval lesion", "a benign breast lesion", "a malignant breast lesion",
                           "a dark oval lesion"])
    x = torch.rand(4, 1, 32, 32)
    ids, m = tok["input_ids"], tok["attention_mask"]
    _, full = L.dcl_loss(v, x, x, ids, m, ids, m)
    assert {"it", "ii", "tt", "gl", "gauss", "target_entropy"} <= set(full)
    _, no_dcl = L.dcl_loss(v, x, x, ids, m, ids, m, dcl=False)
    assert "ii" not in no_dcl and "tt" not in no_dcl and "it" in no_dcl
    _, no_sss = L.dcl_loss(v, x, x, ids, m, ids, m, sss=False)
    assert "gauss" not in no_sss and "target_entropy" not in no_sss
    loss, _ = L.dcl_loss(v, x, x, ids, m, ids, m)
    loss.backward()
    assert v.text_sigma.lin.weight.grad is not None and v.text_sigma.lin.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in v.momentum_copy.parameters())


class _FixedVLM:
    """Stand-in VLM: image embedding = the image's first pixels (one-hot rows), every sentence the same."""
    T = 0.07

    def encode_image(self, x, momentum=False):
        g = x.flatten(1)[:, : len(x)]
        return {"g": g, "local": g[:, :, None, None], "sigma": torch.full_like(g, 0.1)}

    def encode_text(self, ids, mask, momentum=False):
        g = torch.nn.functional.normalize(torch.ones(len(ids), len(ids)), dim=-1)
        return {"g": g, "sigma": torch.full_like(g, 0.1)}


def test_image_term_is_instance_discrimination_even_when_every_image_shares_its_sentence():
    """Sharing a sentence must not make two images the same image: with one sentence for the whole batch,
    image embeddings that tell every image apart (one-hot rows) score a low image-image loss, and collapsed
    ones (all alike) score ln B. (With the text's targets, which call every image of the batch a positive,
    the discriminative embeddings scored far worse than the collapsed ones.)"""
    b = 6
    ids = torch.ones(b, 5, dtype=torch.long)
    x = torch.zeros(b, 1, 4, 4)
    x.view(b, -1)[:, :b] = torch.eye(b)
    _, sharp = L.dcl_loss(_FixedVLM(), x, x, ids, ids, ids, ids, global_local=False)
    _, flat = L.dcl_loss(_FixedVLM(), torch.ones_like(x) / b ** 0.5, torch.ones_like(x) / b ** 0.5, ids, ids,
                         ids, ids, global_local=False)
    assert float(flat["ii"]) == pytest.approx(math.log(b), abs=1e-4)
    assert float(sharp["ii"]) < 0.75 * math.log(b)


def test_grounding_loss_prefers_lesion_phrases_on_the_lesion():
    """Patches inside the mask that point at the lesion phrases and outside at the background phrase score a
    lower grounding loss than the swapped layout; the loss reaches the lesion phrases' embeddings."""
    les = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1, 0.0], [1.0, -0.1, 0.0]]), dim=-1)
    bg = torch.tensor([0.0, 0.0, 1.0])
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:6, 2:6] = 1
    inside = mask[0, 0].bool()
    good = torch.where(inside, les[0].view(3, 1, 1), bg.view(3, 1, 1))[None]
    bad = torch.where(inside, bg.view(3, 1, 1), les[0].view(3, 1, 1))[None]
    les_p = les.clone().requires_grad_(True)
    lg = L.grounding_loss(good, les_p, bg, mask)
    assert float(lg.detach()) < 0.05 < float(L.grounding_loss(bad, les, bg, mask))
    lg.backward()
    assert les_p.grad.abs().sum() > 0
    # a coarser patch grid than the mask: the target is the lesion fraction of each patch
    coarse = torch.nn.functional.avg_pool2d(good, 2)
    assert float(L.grounding_loss(torch.nn.functional.normalize(coarse, dim=1), les, bg, mask)) < 0.05


def test_describe_calibration_says_when_the_map_is_uninformative():
    from busnb.vlm.pretrain import describe_calibration

    weak = describe_calibration({"logloss_map": 0.225, "logloss_prior": 0.227})
    strong = describe_calibration({"logloss_map": 0.244, "logloss_prior": 0.382})
    assert "1% better" in weak and "no information" in weak
    assert "36% better" in strong and "no information" not in strong


def test_momentum_update():
    a, b = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
    before = a.weight.detach().clone()
    momentum_update(a, b, 0.995)
    assert torch.allclose(a.weight, 0.995 * before + 0.005 * b.weight)


# -- texts --------------------------------------------------------------------------------------------------
def test_texts_never_open_unlabeled_masks(tmp_path):
    from busnb.data.io import DataError

    missing = Sample("u1", tmp_path / "u1.png", (tmp_path / "gone_mask.png",), "malignant")
    corrupt_p = tmp_path / "bad_mask.png"
    corrupt_p.write_bytes(b"not a png")
    corrupt = Sample("u2", tmp_path / "u2.png", (corrupt_p,), "benign")
    texts = pool_texts([], [missing, corrupt])
    assert "malignant" in texts["u1"][0]["text"] and "benign" in texts["u2"][0]["text"]
    assert all("mask" not in t["uses"] for v in texts.values() for t in v)
    with pytest.raises((DataError, FileNotFoundError, OSError)):
        pool_texts([missing], [])  # a labeled image's mask is read (and must exist)
    calls = []
    pool_texts([missing], [corrupt], read_mask=lambda s: calls.append(s.id) or np.ones((8, 8), bool))
    assert calls == ["u1"]
    with pytest.raises(ValueError, match="both labeled and unlabeled"):
        pool_texts([missing], [missing], read_mask=lambda s: np.ones((8, 8), bool))


def test_mask_facts_and_vocabulary():
    m = np.zeros((90, 90), bool)
    yy, xx = np.mgrid[:90, :90]
    m[((yy - 15) / 8) ** 2 + ((xx - 75) / 14) ** 2 <= 1] = True  # oval, upper right, small
    f = mask_facts(m)
    assert (f.shape, f.row, f.col) == ("oval", "upper", "right")
    assert mask_facts(np.zeros((9, 9), bool)).empty
    s = Sample("x", Path("x.png"), (), "benign")
    texts = [t["text"] for t in describe(s, f) + describe(Sample("p", Path("p.png"), (), "oval"), f)]
    for t in texts:
        assert check_words(t) == [], t
    assert "an oval benign breast lesion in the upper right part" in texts
    assert "an oval dark oval lesion" not in " ".join(texts) and not any(" a oval" in f" {t}" for t in texts)
    phantom = describe(Sample("p", Path("p.png"), (), "oval"), f)
    assert len({t["text"] for t in phantom}) == len(phantom)  # the class sentence and the bank's are one sentence
    assert {"text": "a dark oval lesion", "uses": ("class", "bank")} in phantom
    assert "benign" in VOCAB and "lobulated" in VOCAB


# -- transformers path ---------------------------------------------------------------------------------------
def test_tiny_transformers_text_model_end_to_end_offline(tmp_path):
    tok = word_tokenizer()
    bert = tiny_bert(len(tok), hidden=16, layers=1, heads=2)
    folder = tmp_path / "tiny-bert"
    bert.save_pretrained(folder)
    tok.save_pretrained(folder)
    v = VLM(text=str(folder), dim=16)
    t = v.text.tokenize(["a dark oval lesion", "a breast tumor"])
    assert t["input_ids"][0, 1] == tok.convert_tokens_to_ids("a")
    x = torch.rand(2, 1, 32, 32)
    loss, _ = L.dcl_loss(v, x, x, t["input_ids"], t["attention_mask"], t["input_ids"], t["attention_mask"])
    loss.backward()
    assert torch.isfinite(loss)
    assert any(p.grad is not None for p in v.text.backbone.parameters())
    with pytest.raises(ModelNotFound, match="huggingface-cli download"):
        VLM(text=str(tmp_path / "no-such-model"))


# -- the stage and the method -------------------------------------------------------------------------------
def test_pretrain_stage_writes_and_resumes(phantom_small, tmp_path):
    from busnb.config import get_profile
    from busnb.stages import STAGES
    from busnb.vlm.pretrain import pretrain_vlm

    assert "vlm_pretrain" in STAGES
    parts = {"labeled": phantom_small[:2], "unlabeled": phantom_small[2:8], "split_name": "phantom-test"}
    prof = get_profile("smoke", image_size=32)
    params = dict(dim=16, text_hidden=16, text_layers=1, batch=4, epochs=1, depth=3, pool_grounding="none")
    torch.manual_seed(0)
    info = pretrain_vlm(params, parts, prof, tmp_path, progress=False, device="cpu")
    assert (tmp_path / "best.pt").is_file() and info["epochs"] == 1 and np.isfinite(info["final"]["loss"])
    assert set(info["calibration"]) >= {"a", "b", "pi"} and 0 < info["calibration"]["pi"] < 1
    first = info["final"]
    info2 = pretrain_vlm({**params, "epochs": 2}, parts, prof, tmp_path, progress=False, device="cpu")
    import json

    hist = json.loads((tmp_path / "history.json").read_text())
    assert len(hist) == 2 and hist[0] == first and info2["final"]["epoch"] == 2
    state = torch.load(tmp_path / "best.pt", weights_only=False)["net"]
    v = VLM.from_params({**params})
    v.load_state_dict(state)
    assert not torch.equal(v.calib, torch.tensor([1.0, 0.0, 0.5]))


def test_fusion_spans_zero_to_one_and_ignores_an_uninformative_map():
    from busnb.methods.dusss import fuse_log_odds

    p = torch.tensor([0.02, 0.3, 0.5, 0.97])
    assert torch.allclose(fuse_log_odds(p, torch.full_like(p, 0.2), 0.2), p, atol=1e-5)
    y = fuse_log_odds(p, torch.tensor([0.01, 0.01, 0.9, 0.99]), 0.2)
    assert y[0] < 0.05 and y[-1] > 0.99  # the release's sigmoid(p + map) stays within [0.5, 0.88]
    assert y[1] < p[1] and y[2] > p[2]


def test_text_selection_keeps_the_candidate_the_map_supports():
    """Of the teacher's lesion candidates, the one with the most text-weighted mass keeps its probabilities, the
    others become background; pixels the teacher calls background, and images without a candidate, are left as
    they are. Without a map (uniform) the larger candidate wins; BCP's largest_component is the same rule by area."""
    from busnb.methods.classic import largest_component
    from busnb.methods.dusss import select_by_text

    p = torch.full((2, 1, 8, 8), 0.2)
    p[0, 0, 0:2, 0:2] = 0.9   # small candidate (4 px)
    p[0, 0, 4:7, 4:7] = 0.8   # large candidate (9 px), touching nothing
    p[0, 0, 7, 0] = 0.4       # below the threshold: never changed
    m = torch.full_like(p, 0.05)
    m[0, 0, 0:2, 0:2] = 0.9   # the text map points at the small one
    y = select_by_text(p, m)
    assert torch.equal(y[0, 0, 0:2, 0:2], p[0, 0, 0:2, 0:2]) and (y[0, 0, 4:7, 4:7] == 0).all()
    assert y[0, 0, 7, 0] == pytest.approx(0.4) and torch.equal(y[1], p[1])
    y_flat = select_by_text(p, torch.full_like(p, 0.5))
    assert (y_flat[0, 0, 0:2, 0:2] == 0).all() and torch.equal(y_flat[0, 0, 4:7, 4:7], p[0, 0, 4:7, 4:7])
    assert torch.equal(largest_component(p > 0.5).bool(), y_flat > 0.5)
    d = p.clone()
    d[0, 0, 2, 2] = 0.7       # a diagonal bridge joins the two: one 8-connected candidate, nothing removed
    d[0, 0, 3, 3] = 0.7
    assert torch.equal(select_by_text(d, m), d)


def test_overlap_selection_keeps_the_candidates_the_map_touches():
    """fusion='overlap': the teacher's candidates that share a pixel with the map's foreground keep their
    probabilities, the others become background; an image whose candidates the map touches nowhere keeps all."""
    from busnb.methods.dusss import keep_overlapping

    p = torch.full((2, 1, 8, 8), 0.2)
    for i in range(2):
        p[i, 0, 0:2, 0:2] = 0.9   # candidate A
        p[i, 0, 4:7, 4:7] = 0.8   # candidate B
        p[i, 0, 0:2, 5:7] = 0.7   # candidate C
    m = torch.zeros_like(p)
    m[0, 0, 1, 1] = 1.0           # touches A by one pixel
    m[0, 0, 6:8, 6:8] = 1.0       # and B at its corner
    m[1, 0, 3, 0] = 1.0           # image 1: touches no candidate
    y = keep_overlapping(p, m)
    assert torch.equal(y[0, 0, 0:2, 0:2], p[0, 0, 0:2, 0:2]) and torch.equal(y[0, 0, 4:7, 4:7], p[0, 0, 4:7, 4:7])
    assert (y[0, 0, 0:2, 5:7] == 0).all() and torch.equal(y[1], p[1])
    assert torch.equal(y[0, 0, 7], p[0, 0, 7])  # background pixels are left as the teacher has them


def test_dusss_appg_refines_with_the_pool_masks_of_its_stage(tmp_path, one_thread):
    """refine_map='appg' (variant dusss-appg): the appg_masks stage stores the APPG pseudo-labels of the unlabeled
    pool at the profile's size, in the pool's order; the method looks them up by batch index, needs no VLM, and its
    run reports teacher vs refined pseudo-labels. Other arrays than the pool are refused, and so are bad options."""
    from busnb.config import get_profile
    from busnb.experiment import prepare, run_experiment
    from busnb.methods import build_method
    from busnb.methods.dusss import pool_batches

    prof = get_profile("smoke", epochs=1, steps_per_epoch=2)
    parts = prepare(prof, progress=False)
    r = run_experiment(prof, "dusss-appg", out_dir=tmp_path / "appg", progress=False, parts=parts)
    rate, st = r["stages"]
    assert rate["kind"] == "label_rate" and st["kind"] == "appg_masks"
    assert st["n_images"] == len(parts["unlabeled"]) and 0 < st["n_kept"] <= st["n_images"]
    state = torch.load(Path(st["dir"]) / "best.pt", weights_only=False)["net"]
    assert state["ids"] == [s.id for s in parts["unlabeled"]]
    assert state["masks"].shape == (len(parts["unlabeled"]), 1, prof.image_size, prof.image_size)
    d = r["pseudo_label_dice"]
    assert d["n"] == len(parts["unlabeled"]) and 0 <= d["refined"] <= 1 and "map_auc" in r
    m = build_method("dusss-appg", TINY)
    assert m.vlm is None and [s.kind for s in m.stages()] == ["label_rate", "appg_masks"]
    m.attach("appg_masks", {"masks": torch.zeros(2, 1, 8, 8, dtype=torch.uint8), "ids": ["a", "b"]})
    other = SegArrays.from_tensors(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.zeros(2, 1, 8, 8, dtype=torch.bool),
                                   samples=[Sample("b", Path("b.png"), (), "x"), Sample("a", Path("a.png"), (), "x")])
    with pytest.raises(ValueError, match="not the unlabeled pool"):
        next(pool_batches(m, other))
    with pytest.raises(ValueError, match="refine_map"):
        build_method("dusss", TINY, refine_map="clip")
    with pytest.raises(ValueError, match="binary mask"):
        build_method("dusss", TINY, refine_map="appg", fusion="log_odds")


def test_vlm_grounded_on_the_pools_appg_pseudo_labels(tmp_path, one_thread):
    """appg_grounding (dusss's default since the fourteenth session; variant dusss-appg_grounding): the
    vlm_pretrain stage makes the APPG pseudo-labels of the unlabeled pool and grounds the lesion phrases on the kept
    ones every step (a 'ground_pool' loss beside the labeled 'ground'); dusss-labeled_grounding (the former
    default) and dusss-no_grounding never do. Grounding on pseudo-labels needs them and refuses images outside the
    pool; bad settings are refused."""
    from busnb.config import get_profile
    from busnb.experiment import prepare, run_experiment
    from busnb.methods import build_method
    from busnb.vlm.pretrain import pretrain_vlm, stage_params

    prof = get_profile("smoke", epochs=2, steps_per_epoch=2)
    parts = prepare(prof, progress=False)
    r = run_experiment(prof, "dusss-appg_grounding", out_dir=tmp_path / "g", progress=False, parts=parts)
    rate, st = r["stages"]
    assert st["kind"] == "vlm_pretrain" and st["params"]["pool_grounding"] == "appg"
    appg = next(s for s in run_experiment(prof, "dusss-appg", out_dir=tmp_path / "a", progress=False,
                                          parts=parts)["stages"] if s["kind"] == "appg_masks")
    assert st["n_pool_grounded"] == appg["n_kept"] > 0  # every kept APPG pseudo-label, nothing else
    hist = json.loads((Path(st["dir"]) / "history.json").read_text())
    assert all(h["ground_pool"] > 0 and h["ground"] > 0 for h in hist)
    assert "refined" in r["pseudo_label_dice"]
    for variant, pool, labeled in (("dusss", "appg", True), ("dusss-appg_grounding", "appg", True),
                                   ("dusss-labeled_grounding", "none", True), ("dusss-no_grounding", "none", False)):
        sp = build_method(variant, TINY).stage_params()
        assert (sp["pool_grounding"], sp["grounding"]) == (pool, labeled), variant
    assert build_method("dusss-appg", TINY).vlm is None  # no VLM, so nothing to ground
    with pytest.raises(ValueError, match="pool_grounding"):
        stage_params(pool_grounding="val")
    # `busnb vlm-pretrain` and 07's pretrained_vlm() without settings train dusss's default stage
    assert stage_params(depth=3) == build_method("dusss", TINY).stage_params()
    with pytest.raises(ValueError, match="needs text_refine"):
        build_method("dusss-appg", TINY, appg_grounding=True)
    with pytest.raises(ValueError, match="needs the unlabeled pool's APPG"):
        pretrain_vlm(stage_params(pool_grounding="appg", depth=prof.encoder_depth), parts, prof, tmp_path / "x",
                     progress=False)
    outside = SegArrays(parts["labeled"][:2], prof.image_size)  # labeled images passed off as pseudo-labels
    with pytest.raises(ValueError, match="unlabeled-pool images"):
        pretrain_vlm(stage_params(pool_grounding="appg", depth=prof.encoder_depth), parts, prof, tmp_path / "y",
                     progress=False, pseudo=outside)


def test_base_rate_controller_pulls_a_shrunken_teacher_to_the_labeled_rate():
    """A teacher whose masks hold 3 % foreground, against 13 % in the labeled masks: the controller's shift
    lifts its pseudo-labels to the labeled rate; one already at the labeled rate is left alone."""
    from busnb.methods.dusss import align_base_rate, align_update

    p = torch.tensor([0.02, 0.3, 0.5, 0.97])
    assert torch.allclose(align_base_rate(p, torch.tensor(0.0)), p, atol=1e-4)
    b0 = torch.tensor(0.0)
    assert align_update(b0, 0.13, torch.tensor(0.03), 0.1) > 0 > align_update(b0, 0.13, torch.tensor(0.4), 0.1)
    assert align_update(b0, 0.13, torch.tensor(0.13), 0.1) == 0
    assert align_update(torch.tensor(4.9), 0.9, torch.tensor(0.0), 1.0) == 5.0  # clipped
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4096, generator=g) * 3 - 3  # confident, nearly binary: 16 % above 0
    logits[logits > 0] -= 2.5  # shrunk: 3 % foreground left
    teacher = torch.sigmoid(logits)
    assert (teacher > 0.5).float().mean() < 0.05
    b = torch.tensor(0.0)
    for _ in range(400):
        idx = torch.randint(0, 4096, (512,), generator=g)
        b = align_update(b, 0.13, (align_base_rate(teacher[idx], b) > 0.5).float().mean(), 0.05)
    assert abs(float((align_base_rate(teacher, b) > 0.5).float().mean()) - 0.13) < 0.02


def test_dusss_rejects_an_unknown_target():
    from busnb.methods import build_method

    with pytest.raises(ValueError, match="target must be 'soft' or 'hard'"):
        build_method("dusss-no_text_refine", TINY, target="binary")


@pytest.mark.parametrize("noise", [0.0, 0.05])
def test_dusss_student_sees_the_unlabeled_batch_clean_unless_noise_is_asked(noise, phantom_small):
    """Default ``noise=0``: the student's unlabeled input is x_u itself (as this repo's Mean Teacher); the variant
    ``dusss-student_noise`` (noise 0.05, the former default) gives it a perturbed copy, the teacher x_u clean."""
    from busnb.methods import VARIANTS, build_method

    assert VARIANTS["dusss-student_noise"] == ("dusss", {"noise": 0.05})
    assert build_method("dusss-no_text_refine", TINY).opts["noise"] == 0  # the default
    arr = SegArrays(phantom_small[:4], 32)
    bl, bu = arr.batch(torch.arange(2)), arr.batch(torch.arange(2, 4))
    torch.manual_seed(0)
    m = build_method("dusss-no_text_refine", TINY, noise=noise, rampup_steps=10)
    m.attach("label_rate", {"pi": torch.tensor(0.2)})
    seen = {"student": [], "teacher": []}
    for name in seen:
        getattr(m, name).register_forward_pre_hook(lambda mod, args, name=name: seen[name].append(args[0].clone()))
    m.loss(bl, bu, 0)
    x_u = bu["image"]
    assert len(seen["teacher"]) == 1 and torch.equal(seen["teacher"][0], x_u)
    student_u = [x for x in seen["student"] if not torch.equal(x, bl["image"])]
    assert len(student_u) == 1
    assert torch.equal(student_u[0], x_u) is (noise == 0)
    if noise:
        assert 0.02 < float((student_u[0] - x_u).std()) < 0.08


@pytest.mark.parametrize("variant", ["dusss", "dusss-no_text_refine", "dusss-align", "dusss-log_odds",
                                     "dusss-conf_weight"])
def test_dusss_training_step_on_phantom(variant, phantom_small, tmp_path):
    from busnb.methods import GROUPS, build_method
    from busnb.train import TrainConfig, Trainer

    assert GROUPS["dusss_ablation"] == ("dusss", "dusss-no_dcl", "dusss-no_sss", "dusss-no_grounding",
                                       "dusss-no_text_refine", "dusss-log_odds", "dusss-align",
                                       "dusss-student_noise", "dusss-conf_weight", "dusss-appg",
                                       "dusss-appg_grounding", "dusss-labeled_grounding")
    lab, unl, val = (SegArrays(phantom_small[:4], 32), SegArrays(phantom_small[4:10], 32),
                     SegArrays(phantom_small[10:12], 32))
    torch.manual_seed(0)
    m = build_method(variant, TINY)
    specs = m.stages()
    assert specs[0].kind == "label_rate"
    with pytest.raises(RuntimeError, match="label_rate stage"):
        m.base_rate()
    m.attach("label_rate", {"pi": torch.tensor(0.2)})  # stands in for the stage
    if variant != "dusss-no_text_refine":
        assert [s.kind for s in specs] == ["label_rate", "vlm_pretrain"] and specs[1].params["sss"] is True
        # the VLM's image encoder has the student U-Net's depth (3 here), unless vlm_depth says otherwise
        assert specs[1].params["depth"] == 3 and not hasattr(m.vlm.image.encoder, "layer3")
        assert build_method(variant, TINY, vlm_depth=4).stages()[1].params["depth"] == 4
        pre = VLM.from_params(specs[1].params)
        pre.calib.copy_(torch.tensor([2.0, -1.0, 0.3]))  # calibrated on other labeled masks: refused
        with pytest.raises(ValueError, match="another split"):
            m.attach("vlm_pretrain", pre.state_dict())
        pre.calib.copy_(torch.tensor([2.0, -1.0, 0.2]))  # stands in for the pretrained stage
        m.attach("vlm_pretrain", pre.state_dict())
        assert m.phrase_g.abs().sum() > 0
        vlm_before = {k: v.clone() for k, v in m.vlm.state_dict().items()}
    else:
        assert len(specs) == 1 and m.vlm is None
    before = {n: p.clone() for n, p in m.student.named_parameters()}
    cfg = TrainConfig(epochs=1, batch_labeled=2, batch_unlabeled=2, steps_per_epoch=2, progress=False)
    t = Trainer(m, cfg, lab, val, unl, tmp_path)
    t.fit(resume=False)
    h = t.history[-1]
    assert np.isfinite(h["loss"]) and np.isfinite(h["Lu"])
    assert h["pi"] == pytest.approx(0.2) and float(m.base_rate()) == pytest.approx(0.2)  # one pi, never re-estimated
    assert (m.align_bias != 0) == (variant == "dusss-align")  # the base-rate controller runs only when on
    assert ("conf" in h) == (variant == "dusss-conf_weight") and 0 <= h.get("conf", 0) <= 1
    assert any(not torch.equal(before[n], p) for n, p in m.student.named_parameters())
    opt_ids = {id(p) for g in t.opt.param_groups for p in g["params"]}
    assert all(id(p) not in opt_ids for n, p in m.named_parameters() if n.startswith(("teacher", "vlm")))
    if variant != "dusss-no_text_refine":
        assert all(torch.equal(vlm_before[k], v) for k, v in m.vlm.state_dict().items())
        assert not any(k.startswith("vlm.") for k in m.checkpoint_state())
        pl = m.pseudo_labels(unl.batch([0, 1])["image"])
        assert pl["map"] is not None
        if m.opts["fusion"] == "log_odds":
            assert not torch.allclose(pl["refined"], pl["teacher"])
        else:  # the selection only removes candidates of the (aligned) teacher
            from busnb.methods.dusss import select_by_text

            assert torch.equal(pl["refined"], select_by_text(pl["aligned"], pl["map"]))
            assert (pl["refined"] <= pl["aligned"]).all() and m.capturable is False
        from busnb.methods.dusss import pseudo_label_dice

        d = pseudo_label_dice(m, unl)
        assert 0 <= d["teacher"] <= 1 and 0 <= d["refined"] <= 1 and d["n"] == len(unl)
        from busnb.methods.dusss import map_auc

        a = map_auc(m, unl)
        assert set(a) == {"teacher", "map", "refined", "n", "stride"} and a["stride"] == 1
        assert all(0 <= a[k] <= 1 for k in ("teacher", "map", "refined"))
        assert map_auc(m, unl, max_pixels=len(unl) * 32 * 32 // 3)["stride"] == 3


def test_vlm_pretrain_command_rejects_unknown_settings(capsys):
    from busnb.cli import main

    assert main(["vlm-pretrain", "--profile", "smoke", "--vlm-set", "epoch=3"]) == 2
    err = capsys.readouterr().err
    assert "unknown vlm_pretrain setting" in err and "epochs" in err


def test_dusss_run_reports_pseudo_label_dice_of_the_unlabeled_pool(tmp_path, one_thread):
    """A dusss run writes the Dice of its final teacher's pseudo-labels on the unlabeled pool, unrefined and
    text-refined, into metrics.json (reporting only); the VLM stage it trained records the grounding term and a
    calibration fitted on the labeled images only."""
    from busnb.config import get_profile
    from busnb.experiment import prepare, run_experiment

    prof = get_profile("smoke", epochs=1, steps_per_epoch=2)
    parts = prepare(prof, progress=False)
    r = run_experiment(prof, "dusss", out_dir=tmp_path / "dusss", progress=False, parts=parts,
                       method_kwargs={"vlm_epochs": 1})
    d = r["pseudo_label_dice"]
    assert d["n"] == len(parts["unlabeled"]) > 0
    assert 0 <= d["teacher"] <= 1 and 0 <= d["refined"] <= 1
    assert r["map_auc"]["n"] == d["n"] and 0 <= r["map_auc"]["map"] <= 1  # how informative the text map is
    rate, st = r["stages"]
    assert st["kind"] == "vlm_pretrain" and "ground" in st["final"]
    assert st["calibration"]["n_images"] == len(parts["labeled"])
    # one pi: the label_rate stage's, which the VLM's calibration reproduces from the same labeled masks
    assert rate["kind"] == "label_rate" and rate["n_images"] == len(parts["labeled"])
    assert 0 < rate["pi"] < 1 and st["calibration"]["pi"] == pytest.approx(rate["pi"], abs=1e-7)
    # the selection's ceiling (best single candidate) is in metrics.json, and it can only be above the selection
    assert r["selection"]["oracle"] >= d["refined"] - 1e-6 and 0 <= r["selection"]["multi"] <= 1
    from busnb.methods.dusss import describe_pool  # the sentences busnb pool-report and 07 print

    lines = describe_pool(r)
    assert len(lines) == 4 and f"teacher {d['teacher']:.3f}" in lines[0] and f"refined {d['refined']:.3f}" in lines[0]
    assert f"{r['selection']['oracle']:.3f}" in lines[2]
    assert describe_pool({"pseudo_label_dice": {"n": 3, "teacher": 0.5}}) == [
        "pseudo-label Dice on the 3 unlabeled images: teacher 0.500"]  # an older run: what it has, no error
    # busnb pool-report scores the same final teacher again, into pool_report.json beside metrics.json
    from busnb.cli import main

    assert main(["pool-report", str(tmp_path / "dusss")]) == 0
    rep = json.loads((tmp_path / "dusss" / "pool_report.json").read_text())
    assert rep["pseudo_label_dice"] == pytest.approx(d) and rep["selection"] == pytest.approx(r["selection"])
    assert set(rep["confidence"]) == {"map", "teacher", "n"}
    (tmp_path / "copy").mkdir()  # a results/ copy of a run has no checkpoint: a clear error, not a crash
    for f in ("run.json", "metrics.json"):
        (tmp_path / "copy" / f).write_text((tmp_path / "dusss" / f).read_text())
    with pytest.raises(FileNotFoundError, match="last.pt"):
        from busnb.vlm.report import run_pool_report

        run_pool_report(tmp_path / "copy")


def test_image_encoder_takes_its_local_map_from_the_deepest_stage_it_has():
    from busnb.vlm.model import ImageEncoder

    x = torch.rand(2, 1, 32, 32)
    for depth, side in ((2, 8), (3, 4), (5, 4)):  # stride 4 at depth 2, else stride 8 (stage 3)
        g, loc = ImageEncoder("resnet18", 16, depth=depth)(x)
        assert g.shape == (2, 16) and loc.shape == (2, 16, side, side)


def test_top_area_marks_exactly_n_pixels_per_image_highest_first():
    from busnb.methods.dusss import top_area

    s = torch.tensor([0.1, 0.9, 0.5, 0.5, 0.2, 0.8, 0.3, 0.0]).view(2, 1, 2, 2)
    m = top_area(s, torch.tensor([2, 0]))
    assert m.tolist() == [[[[0.0, 1.0], [1.0, 0.0]]], [[[0.0, 0.0], [0.0, 0.0]]]]  # tie 0.5/0.5: first by position
    assert top_area(s, torch.tensor([4, 3])).flatten(1).sum(1).tolist() == [4.0, 3.0]
    assert top_area(s, torch.tensor([1, 1]))[1].flatten().tolist() == [0.0, 1.0, 0.0, 0.0]


class FixedLabels(torch.nn.Module):
    """Stands in for a dusss method in pool_report / refined_images: ``pseudo_labels`` returns ``labels(x)`` for
    a batch x, with a teacher to find the device on and, unless ``vlm=False``, a text map."""
    opts = {"align": False, "refine_map": "vlm"}

    def __init__(self, labels, vlm: bool = True):
        super().__init__()
        self.labels = labels
        self.teacher, self.vlm = torch.nn.Linear(1, 1), (torch.nn.Identity() if vlm else None)

    @property
    def has_map(self):
        return self.vlm is not None

    def pseudo_labels(self, x, refine=True, index=None):
        return self.labels(x)


def test_pool_report_counts_the_refinements_flips_and_scores_it_at_the_teachers_area():
    """Hand-made labels: the refinement flips two of four pixels to lesion, one rightly; at the teacher's area (one
    pixel) the refined map keeps its best pixel only."""
    from busnb.methods.dusss import pool_report

    t = torch.tensor([0.9, 0.2, 0.2, 0.2]).view(1, 1, 2, 2)
    r = torch.tensor([0.9, 0.7, 0.7, 0.2]).view(1, 1, 2, 2)
    fixed = FixedLabels(lambda x: {"teacher": t, "aligned": t, "map": t, "refined": r})
    arrays = SegArrays.from_tensors(torch.zeros(1, 1, 2, 2, dtype=torch.uint8),
                                    torch.tensor([True, True, False, False]).view(1, 1, 2, 2))
    r = pool_report(fixed, arrays)
    assert r["flips"]["changed"] == pytest.approx(0.5) and r["flips"]["right"] == pytest.approx(0.5)
    assert r["flips"]["dice_at_teacher_area"] == pytest.approx(2 / 3, abs=1e-4)
    assert r["pseudo_label_dice"]["teacher"] == pytest.approx(2 / 3, abs=1e-4)
    assert r["pseudo_label_dice"]["refined"] == pytest.approx(0.8, abs=1e-4)


def test_confidence_weights_trust_each_label_as_much_as_the_teacher_does():
    """c_i = the teacher's mean probability over the label's foreground, 0 for an empty label; the unlabeled loss
    is the c-weighted mean of the per-image losses, so an image with c = 0 does not count; the per-image BCE +
    Dice averages to bce_dice."""
    from busnb.losses import bce_dice, bce_dice_per_image
    from busnb.methods.dusss import confidence_weighted, label_confidence

    p = torch.zeros(3, 1, 2, 2)
    p[0, 0, 0] = torch.tensor([0.9, 0.7])  # label of two pixels: confidence 0.8
    p[1, 0, 0, 0] = 0.6                    # one pixel: 0.6
    p[2] = 0.4                             # nothing above 0.5: an empty label
    y = (p > 0.5).float()
    c = label_confidence(p, y)
    assert c.tolist() == pytest.approx([0.8, 0.6, 0.0])
    losses = torch.tensor([1.0, 2.0, 100.0])
    assert float(confidence_weighted(losses, c)) == pytest.approx((0.8 + 1.2) / 1.4)  # image 2 ignored
    assert float(confidence_weighted(losses, torch.zeros(3))) == 0.0
    logits = torch.randn(3, 1, 4, 4)
    target = (torch.rand(3, 1, 4, 4) > 0.5).float()
    per = bce_dice_per_image(logits, target)
    assert per.shape == (3,) and float(per.mean()) == pytest.approx(float(bce_dice(logits, target)), rel=1e-5)
    per_soft = bce_dice_per_image(logits, target * 0.7)  # soft targets too
    assert float(per_soft.mean()) == pytest.approx(float(bce_dice(logits, target * 0.7)), rel=1e-5)


def test_best_component_keeps_the_candidate_that_matches_the_mask():
    """The oracle selection: of two candidates, the one with the higher Dice against the mask wins even when it is
    the smaller; candidates are 8-connected; an image without foreground stays empty; counts per image."""
    from busnb.methods.dusss import best_component

    fg = torch.zeros(3, 1, 4, 6)
    fg[0, 0, 0, 0:2] = 1          # small candidate on the lesion
    fg[0, 0, 2:4, 3:6] = 1        # larger one beside it
    fg[1, 0, 0, 0] = fg[1, 0, 1, 1] = 1  # a diagonal pair: one candidate
    y = torch.zeros(3, 1, 4, 6, dtype=torch.bool)
    y[0, 0, 0, 0:3] = True
    y[1, 0, 1, 1] = True
    best, n = best_component(fg, y)
    assert n.tolist() == [2, 1, 0]
    assert best[0, 0].nonzero().tolist() == [[0, 0], [0, 1]]
    assert torch.equal(best[1], fg[1]) and best[2].sum() == 0


def test_pool_report_gives_the_selections_ceiling_and_ranks_the_confidences():
    """Three hand-made images: two candidates where the mask holds one (the oracle keeps it, Dice 1), one right
    and one wrong single candidate. The teacher's mean probability over its label orders the images as their
    Dice does, the map's mean the other way round: rank correlations +1 and -1."""
    from busnb.methods.dusss import pool_report

    t = torch.zeros(3, 1, 2, 4)
    t[0, 0, 0, 0] = t[0, 0, 0, 3] = 0.9   # two candidates, Dice 2/3 together
    t[1, 0, 1, 1] = 0.99                  # right
    t[2, 0, 1, 2] = 0.6                   # wrong
    m = torch.zeros(3, 1, 2, 4)
    m[0], m[1], m[2] = 0.5, 0.1, 0.9
    y = torch.zeros(3, 1, 2, 4, dtype=torch.bool)
    y[0, 0, 0, 0] = y[1, 0, 1, 1] = y[2, 0, 0, 0] = True

    def labels(x):
        i = (x[:, 0, 0, 0] * 255).round().long()  # the batch holds images / 255: image k has value k
        return {"teacher": t[i], "aligned": t[i], "map": m[i], "refined": t[i]}

    images = torch.arange(3, dtype=torch.uint8).view(3, 1, 1, 1).expand(3, 1, 2, 4).contiguous()
    arrays = SegArrays.from_tensors(images, y)
    r = pool_report(FixedLabels(labels), arrays, batch=2)
    assert r["pseudo_label_dice"]["teacher"] == pytest.approx((2 / 3 + 1 + 0) / 3, abs=1e-4)
    assert r["selection"]["oracle"] == pytest.approx(2 / 3, abs=1e-4)
    assert r["selection"]["multi"] == pytest.approx(1 / 3)
    assert r["confidence"]["teacher"] == pytest.approx(1.0) and r["confidence"]["map"] == pytest.approx(-1.0)
    assert r["confidence"]["n"] == 3


def test_refined_images_lists_the_images_whose_label_the_refinement_changes():
    """Three images, batches of two: the refinement changes the thresholded label of the second and third only
    (a soft change that stays on one side of 0.5 does not count); without a map it is an error."""
    from busnb.methods.dusss import refined_images

    def labels(x):
        v = (x * 255).round()         # the batch holds images / 255
        t = v / 10
        r = t.clone()
        r[v[:, 0, 0, 0] == 8] = 0.0   # a candidate removed
        r[v[:, 0, 0, 0] == 9] = 0.95  # stays lesion: no change at the threshold
        r[v[:, 0, 0, 0] == 2] = 0.6   # background made lesion
        return {"teacher": t, "aligned": t, "map": t, "refined": r}

    arrays = SegArrays.from_tensors(torch.tensor([9, 8, 2], dtype=torch.uint8).view(3, 1, 1, 1).expand(3, 1, 2, 2),
                                    torch.zeros(3, 1, 2, 2, dtype=torch.bool))
    assert refined_images(FixedLabels(labels), arrays, batch=2) == [1, 2]
    with pytest.raises(ValueError, match="no map"):
        refined_images(FixedLabels(labels, vlm=False), arrays)


def test_grounding_text_is_encoded_in_the_order_the_committed_runs_drew_it(phantom_small, tmp_path, monkeypatch):
    """The text encoder's dropout draws from the same generator as the grounding batches, so where the phrases are
    encoded decides every later random number. With the pool term on they are encoded before any grounding batch is
    drawn (the order of the runs of ``dusss-appg_grounding`` committed under ``results/``), with the labeled term
    alone after its batch (the order of every run made before the pool term existed). Either way once per step."""
    import busnb.vlm.pretrain as P
    from busnb.config import get_profile
    from busnb.vlm.texts import BACKGROUND_PHRASE, LESION_PHRASES

    parts = {"labeled": phantom_small[:2], "unlabeled": phantom_small[2:8], "split_name": "phantom-test"}
    prof = get_profile("smoke", image_size=32)
    events = []
    flip, encode = P.flip_pair, VLM.encode_text
    monkeypatch.setattr(P, "flip_pair", lambda x, y: events.append("batch") or flip(x, y))

    def logged_encode(self, ids, mask, **kw):
        phrases = self.text.tokenize([*LESION_PHRASES, BACKGROUND_PHRASE])["input_ids"]
        if ids.shape == phrases.shape and torch.equal(ids.cpu(), phrases):
            events.append("phrases")
        return encode(self, ids, mask, **kw)

    monkeypatch.setattr(VLM, "encode_text", logged_encode)
    params = dict(dim=16, text_hidden=16, text_layers=1, batch=6, epochs=1, depth=3)
    P.pretrain_vlm({**params, "pool_grounding": "appg"}, parts, prof, tmp_path / "pool", progress=False,
                   device="cpu", pseudo=SegArrays(parts["unlabeled"][:3], 32))
    assert events[:3] == ["phrases", "batch", "batch"]  # one step: phrases, labeled batch, pool batch
    events.clear()
    P.pretrain_vlm({**params, "pool_grounding": "none"}, parts, prof, tmp_path / "lab", progress=False, device="cpu")
    assert events[:2] == ["batch", "phrases"]


def test_loss_table_names_each_term_and_leaves_a_missing_one_blank():
    from busnb.vlm.pretrain import LOSS_TERMS, loss_table

    sss = {"epochs": 3, "first": {"epoch": 1, "loss": 16.6, "it": 2.7, "gauss": 4.1},
           "final": {"epoch": 3, "loss": 15.0, "it": 2.5, "gauss": 3.9}}
    plain = {"epochs": 1, "first": {"epoch": 1, "loss": 12.9, "it": 2.8}, "final": {"epoch": 1, "loss": 12.9, "it": 2.8}}
    t = loss_table({"SSS": sss, "plain": plain})
    assert list(t.columns) == ["term", "SSS: epoch 1", "SSS: epoch 3", "plain: epoch 1"]  # one epoch: one column
    assert list(t.index) == ["loss", "it", "gauss"] and t.loc["it", "term"] == LOSS_TERMS["it"]
    assert t.loc["gauss", "SSS: epoch 3"] == 3.9 and t["plain: epoch 1"].isna().tolist() == [False, False, True]
