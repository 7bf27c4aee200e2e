"""busnb.predict: applying a trained run to new images and scoring it on another dataset / part."""
import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from busnb.data import DataError
from busnb.predict import (cross_dataset_table, evaluate_run, image_stats, list_images,
                           predict_folder)

CSV_COLUMNS = ["id", "file", "height", "width", "area_px", "area_frac", "n_components", "mean_prob_in_mask",
               "confidence"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny finished supervised run on the smoke phantom (1 epoch of 1 step)."""
    from busnb.config import get_profile
    from busnb.experiment import run_experiment

    out = tmp_path_factory.mktemp("run") / "supervised-phantom"
    run_experiment(get_profile("smoke", epochs=1, steps_per_epoch=1), "supervised", out_dir=out, progress=False)
    return out


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    """An 8-bit PNG, a 16-bit PNG, an RGB JPEG, an RGBA PNG, and two OS junk files, all of different sizes."""
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (50, 70), dtype=np.uint8)).save(d / "gray8.png")
    Image.fromarray((rng.integers(0, 4096, (40, 60)) * 16).astype(np.uint16)).save(d / "gray16.png")
    Image.fromarray(rng.integers(0, 256, (45, 55, 3), dtype=np.uint8)).save(d / "colour.jpg", quality=90)
    Image.fromarray(rng.integers(0, 256, (33, 47, 4), dtype=np.uint8)).save(d / "alpha.png")
    (d / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (d / "._gray8.png").write_bytes(b"\0\5\26\7AppleDouble")
    return d


SIZES = {"gray8": (50, 70), "gray16": (40, 60), "colour": (45, 55), "alpha": (33, 47)}


def test_16bit_fixture_really_is_16bit(mixed_folder):
    assert Image.open(mixed_folder / "gray16.png").mode.startswith("I")
    assert Image.open(mixed_folder / "colour.jpg").mode == "RGB"


def test_predict_writes_masks_at_original_size_and_the_table(run, mixed_folder, tmp_path, capsys):
    out = tmp_path / "pred"
    df = predict_folder(run, mixed_folder, out, batch=3, device="cpu", progress=False)
    printed = capsys.readouterr().out
    assert "skipped 2" in printed and ".DS_Store" in printed
    assert list(df.columns) == CSV_COLUMNS
    assert sorted(df["id"]) == sorted(SIZES)
    on_disk = pd.read_csv(out / "predictions.csv")
    assert list(on_disk.columns) == CSV_COLUMNS and len(on_disk) == 4
    for _, r in on_disk.iterrows():
        h, w = SIZES[r["id"]]
        assert (r["height"], r["width"]) == (h, w)
        mask = np.asarray(Image.open(out / "masks" / f"{r['id']}.png"))
        prob = np.asarray(Image.open(out / "prob" / f"{r['id']}.png"))
        ov = np.asarray(Image.open(out / "overlays" / f"{r['id']}.png"))
        assert mask.shape == prob.shape == (h, w) and ov.shape == (h, w, 3)
        assert set(np.unique(mask)) <= {0, 255} and prob.dtype == np.uint8
        assert r["area_px"] == int((mask == 255).sum())
        assert math.isclose(r["area_frac"], r["area_px"] / (h * w))
        assert 0.0 <= r["confidence"] <= 1.0
    meta = json.loads((out / "predict.json").read_text())
    assert meta["n_images"] == 4 and meta["n_skipped"] == 2 and meta["threshold"] == 0.5
    assert not list(out.rglob("*.tmp"))  # atomic writes leave no temporaries


def _forced(run, tmp_path, bias: float):
    """A copy of the run whose network outputs logit ``bias`` everywhere."""
    dst = tmp_path / f"forced{bias:+g}"
    shutil.copytree(run, dst)
    st = torch.load(dst / "best.pt", weights_only=False)
    st["net"]["net.segmentation_head.0.weight"].zero_()
    st["net"]["net.segmentation_head.0.bias"].fill_(bias)
    torch.save(st, dst / "best.pt")
    return dst


def test_known_foreground_and_background(run, mixed_folder, tmp_path):
    hi = predict_folder(_forced(run, tmp_path, 30.0) / "best.pt", mixed_folder, tmp_path / "hi", progress=False)
    assert (hi["area_frac"] == 1.0).all() and (hi["n_components"] == 1).all()
    assert np.allclose(hi["mean_prob_in_mask"], 1.0) and np.allclose(hi["confidence"], 1.0)
    assert (np.asarray(Image.open(tmp_path / "hi" / "masks" / "gray16.png")) == 255).all()
    lo = predict_folder(_forced(run, tmp_path, -30.0), mixed_folder, tmp_path / "lo", progress=False)
    assert (lo["area_px"] == 0).all() and (lo["n_components"] == 0).all()
    assert lo["mean_prob_in_mask"].isna().all() and np.allclose(lo["confidence"], 1.0)
    # a threshold is a threshold: logit 0 -> p = 0.5 everywhere -> undecided, confidence 0
    mid = predict_folder(_forced(run, tmp_path, 0.0), mixed_folder, tmp_path / "mid", threshold=0.4, progress=False)
    assert (mid["area_frac"] == 1.0).all() and np.allclose(mid["confidence"], 0.0, atol=1e-6)


def test_image_stats_counts_components_and_confidence():
    p = np.zeros((20, 20))
    p[2:5, 2:5] = 0.9
    p[10:15, 10:12] = 0.7
    p[0, 19] = 0.5  # on the threshold: background
    s = image_stats(p, 0.5)
    assert s["n_components"] == 2 and s["area_px"] == 9 + 10
    assert math.isclose(s["mean_prob_in_mask"], (9 * 0.9 + 10 * 0.7) / 19)
    assert math.isclose(s["confidence"], (9 * 0.8 + 10 * 0.4 + 1 * 0.0 + 380 * 1.0) / 400)


def test_bad_inputs_name_the_file_or_folder(run, mixed_folder, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(mixed_folder, bad)
    (bad / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="notes.txt"):  # named explicitly: an error
        list_images([bad / "gray8.png", bad / "notes.txt"])
    (bad / "zz_broken.png").write_text("not a png either")  # sorted last: read after the good ones
    (bad / "zz_truncated.png").write_bytes((mixed_folder / "gray8.png").read_bytes()[:200])
    with pytest.raises(DataError, match="(?s)2 file.*zz_broken.png.*zz_truncated.png.*Nothing was written") as e:
        predict_folder(run, bad, tmp_path / "o2", batch=1, progress=False)
    assert "notes.txt" not in str(e.value)
    assert not (tmp_path / "o2").exists()  # checked before any output
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="empty"):
        predict_folder(run, empty, tmp_path / "o3", progress=False)
    (empty / ".DS_Store").write_bytes(b"x")
    with pytest.raises(DataError, match="no images.*skipped 1"):
        list_images(empty)
    Image.open(mixed_folder / "gray8.png").save(bad / "gray8.jpg")
    with pytest.raises(DataError, match="same name"):
        list_images([mixed_folder / "gray8.png", bad / "gray8.jpg"])
    with pytest.raises(FileNotFoundError, match="best.pt"):
        predict_folder(empty, mixed_folder, tmp_path / "o4", progress=False)


def test_evaluate_run_records_dataset_and_never_touches_checkpoints(run, tmp_path):
    from busnb import splits as S
    from busnb.data import PhantomConfig, load_dataset, load_phantom

    before = {f: (run / f).read_bytes() for f in ("best.pt", "last.pt", "metrics.json")}
    r = evaluate_run(run, "phantom", part="val", progress=False)
    samples = load_dataset("phantom")
    n_val = len(S.load_or_make("phantom", samples, seed=0)["val"])
    dest = run / "eval" / "phantom-val"
    table = pd.read_csv(dest / "per_image.csv")
    saved = json.loads((dest / "metrics.json").read_text())
    assert len(table) == n_val == r["summary"]["n"] == saved["summary"]["n"]
    assert {"dice", "iou", "hd95", "asd"} <= set(table.columns)
    assert saved["dataset"] == "phantom" and saved["part"] == "val" and saved["root"]
    assert saved["run"] == str(run.resolve()) and saved["trained_on"]["dataset"] == "phantom"
    assert math.isclose(saved["summary"]["dice"], table["dice"].mean())
    assert "optimistic" in saved["seen_in_training"]  # val steered model selection: flagged

    # another dataset: a differently drawn phantom read as a user's 'folder', scored on all its images
    other = tmp_path / "other_site"
    load_phantom(other, PhantomConfig(n_images=5, size=48, seed=11))
    r2 = evaluate_run(run, "folder", root=other, part="all", progress=False)
    saved2 = json.loads((run / "eval" / "folder-other_site-all" / "metrics.json").read_text())
    assert saved2["summary"]["n"] == 5 == r2["summary"]["n"]
    assert saved2["dataset"] == "folder" and saved2["root"] == str(other.resolve())
    assert saved2["seen_in_training"] is None
    assert {f: (run / f).read_bytes() for f in before} == before  # evaluation never retrains or rewrites

    t = cross_dataset_table([run.parent])
    assert list(t.index.names) == ["trained on", "method", "ratio", "seed"] and len(t) == 1
    assert {"phantom-test", "phantom-val", "folder-other_site-all"} <= set(t.columns)
    assert math.isclose(t["folder-other_site-all"].iloc[0], 100 * saved2["summary"]["dice"])
    with pytest.raises(ValueError, match="part"):
        evaluate_run(run, "phantom", part="validation", progress=False)


def test_cli_predict_and_evaluate(run, mixed_folder, tmp_path, capsys):
    from busnb.cli import main

    out = tmp_path / "cli"
    assert main(["predict", str(run), str(mixed_folder), "--out", str(out), "--device", "cpu", "--batch", "2",
                 "--threshold", "0.6"]) == 0
    printed = capsys.readouterr().out
    assert "4 image(s)" in printed and str(out) in printed and (out / "predictions.csv").is_file()
    assert json.loads((out / "predict.json").read_text())["threshold"] == 0.6
    assert main(["evaluate", str(run), "--dataset", "phantom", "--part", "test"]) == 0
    printed = capsys.readouterr().out
    saved = json.loads((run / "eval" / "phantom-test" / "metrics.json").read_text())
    assert "Dice" in printed and f"({saved['summary']['n']} images)" in printed
    # the run's own test split re-scored from best.pt: the same numbers training wrote
    trained = json.loads((run / "metrics.json").read_text())
    assert math.isclose(saved["summary"]["dice"], trained["test"]["dice"], abs_tol=1e-6)
    assert saved["seen_in_training"] is None and saved["n_images"] == trained["n_test"]


def test_older_run_without_run_json_loads_the_same_network(run, mixed_folder, tmp_path):
    """Runs trained before run.json existed are rebuilt from metrics.json's profile and the checkpoint's shapes."""
    old = tmp_path / "old_run"
    shutil.copytree(run, old, ignore=shutil.ignore_patterns("eval"))
    (old / "run.json").unlink()
    a = predict_folder(run, mixed_folder, tmp_path / "a", progress=False)
    b = predict_folder(old, mixed_folder, tmp_path / "b", progress=False)
    pd.testing.assert_frame_equal(a.drop(columns="file"), b.drop(columns="file"))
    for name in ("gray16", "colour"):
        assert (np.asarray(Image.open(tmp_path / "a" / "prob" / f"{name}.png"))
                == np.asarray(Image.open(tmp_path / "b" / "prob" / f"{name}.png"))).all()


def test_default_model_prefers_the_dual_teacher_run(tmp_path):
    """08_apply_model's default: the folder's finished dual-teacher run, else its first finished run by name; a run
    without best.pt is not finished; an empty folder gives None."""
    from busnb.predict import default_model

    assert default_model(tmp_path) is None
    for name, done in (("supervised-busi-r2.5-s0", True), ("plus_static-busi-r2.5-s0", True),
                       ("dual_teacher-busi-r2.5-s0", False)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text("{}")
        if done:
            (tmp_path / name / "best.pt").write_bytes(b"")
    assert default_model(tmp_path).name == "plus_static-busi-r2.5-s0"  # the dual-teacher run is unfinished
    (tmp_path / "dual_teacher-busi-r2.5-s0" / "best.pt").write_bytes(b"")
    assert default_model(tmp_path).name == "dual_teacher-busi-r2.5-s0"


def test_a_folder_skips_other_files_by_name_and_a_rerun_replaces_its_outputs(run, mixed_folder, tmp_path, capsys):
    imgs = tmp_path / "imgs"
    shutil.copytree(mixed_folder, imgs)
    (imgs / "notes.txt").write_text("my notes")
    out = tmp_path / "pred"
    predict_folder(run, imgs, out, progress=False)
    printed = capsys.readouterr().out
    assert "skipped 3" in printed and "notes.txt" in printed and "phantom" in printed  # and a note on the model
    assert json.loads((out / "predict.json").read_text())["n_skipped"] == 3
    (out / "keep_me.txt").write_text("a file of the user's")
    for f in ("gray16.png", "colour.jpg", "alpha.png"):
        (imgs / f).unlink()
    df = predict_folder(run, imgs, out, progress=False)
    assert "replaced the outputs of an earlier predict (4 image(s))" in capsys.readouterr().out
    assert list(df["id"]) == ["gray8"] and len(pd.read_csv(out / "predictions.csv")) == 1
    for d in ("masks", "prob", "overlays"):
        assert sorted(f.name for f in (out / d).iterdir()) == ["gray8.png"]  # no image of the earlier run is left
    assert (out / "keep_me.txt").is_file()
    # the output folder as the input folder: its predictions.csv / predict.json are skipped, not an error
    predict_folder(run, out / "masks", out / "masks", progress=False)
    with pytest.raises(DataError, match="is a file"):
        predict_folder(run, imgs, imgs / "gray8.png", progress=False)


def test_an_empty_folder_points_at_the_sub_folder_that_holds_images(run, mixed_folder, tmp_path):
    top = tmp_path / "top"
    shutil.copytree(mixed_folder, top / "scans")
    with pytest.raises(DataError, match="sub-folders are not searched.*scans"):
        list_images(top)
