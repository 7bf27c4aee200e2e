"""Helpers behind notebooks 03-06: paired differences, selection and similarity summaries, figures, profiles."""
import pytest
import torch


def test_paired_difference_and_its_verdict():
    import pandas as pd

    from busnb.diagnostics import describe_difference, paired_difference

    rows = [{"image": i, "target": t, "dice": d} for i in range(20)
            for t, d in (("a", 0.8 + 0.01 * (i % 3)), ("b", 0.7), ("c", 0.8 + 0.01 * (i % 3) + (0.05 if i % 2 else -0.05)))]
    s = pd.DataFrame(rows)
    r = paired_difference(s, "a", "b")
    assert r["mean"] == pytest.approx(0.11, abs=0.01) and 0 < r["lo"] <= r["mean"] <= r["hi"]
    assert r["wins"] == 20 and r["losses"] == 0 and "a is better" in describe_difference(r)
    r = paired_difference(s, "c", "a")                    # +-0.05 alternating: no difference on average
    assert r["lo"] < 0 < r["hi"] and "cannot tell them apart" in describe_difference(r)
    with pytest.raises(ValueError, match="no images"):
        paired_difference(s, "a", "nope")


class _Const(torch.nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits.expand(len(x), -1, -1, -1)


class _Arrays:
    def __init__(self, masks):
        self.masks = masks

    def __len__(self):
        return len(self.masks)

    def batch(self, idx):
        idx = list(idx)
        return {"image": torch.zeros(len(idx), 1, 4, 4), "mask": self.masks[idx]}


def test_fusion_scores_match_the_mean_table():
    from busnb.diagnostics import fusion_quality, fusion_scores

    gt = torch.zeros(3, 1, 4, 4)
    gt[:, :, :2, :2] = 1
    right = torch.where(gt[:1] > 0, 5.0, -5.0)           # confident and right
    method = torch.nn.Module()
    method.static_teacher, method.ema_teacher = _Const(right), _Const(torch.full((1, 1, 4, 4), -5.0))  # B: all background
    s = fusion_scores(method, _Arrays(gt), k=2, batch=2)
    assert len(s) == 3 * 6 and set(s["image"]) == {0, 1, 2}
    q = fusion_quality(method, _Arrays(gt), k=2, scores=s).set_index("target")["dice_vs_gt"]
    assert q["T^A (static)"] == pytest.approx(1.0) and q["T^B (EMA)"] == pytest.approx(0.0)
    assert q["UEWF (pixel)"] == pytest.approx(1.0)        # equally confident everywhere: the lesion half survives


def test_selection_table_says_when_the_floor_sets_tau():
    from busnb import aurcl as A
    from busnb.diagnostics import selection_table

    p = torch.full((1, 1, 10, 10), 0.99)
    p[..., 0, :5] = 0.5                                   # 5 % of the pixels inside the floor (|p - 0.5| <= 0.1)
    am = {"by_k": {}}
    for kf in (0.01, 0.2):
        sel, tau = A.low_confidence_mask(p, kf, 0.2)
        am["by_k"][kf] = {"selected": sel, "tau": tau, "fraction": sel.float().mean().item()}
    t = selection_table(am)
    assert t.loc["1%", "tau set by"] == "floor on 1/1 images" and t.loc["1%", "selected"] == "5.0%"
    assert t.loc["20%", "tau set by"] == "K" and t.loc["20%", "selected"] == "100.0%"


def test_similarity_summary():
    from busnb.diagnostics import similarity_summary

    s = similarity_summary(torch.eye(4) * 0.5 + 0.5)     # positives 1, negatives 0.5
    assert s["positives"] == pytest.approx(1.0) and s["negatives"] == pytest.approx(0.5) and s["gap"] == pytest.approx(0.5)
    assert similarity_summary(torch.ones(2, 3, 3))["gap"] == pytest.approx(0.0)


def test_figures_one_colorbar_per_map_column_and_one_axis_per_quantity():
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np

    from busnb.show import show_map_columns, show_patches, show_training

    m = np.random.default_rng(0).random((2, 8, 8))
    fig = show_map_columns([{"title": "image", "maps": m, "image": True, "contours": m > 0.5},
                            {"title": "p", "maps": m, "vmin": 0, "vmax": 1, "label": "probability"},
                            {"title": "E", "maps": m, "cmap": "magma"}])
    bars = [a for a in fig.axes if a.get_label() == "<colorbar>"]
    assert len(fig.axes) == 2 * 3 + 2 and len(bars) == 2 and bars[0].get_xlabel() == "probability"
    assert [fig.axes[c].get_title() for c in range(3)] == ["image", "p", "E"]
    hist = [{"epoch": e, "loss": 3.0 / e, "val_dice": d, "val_empty": 0.0} for e, d in [(1, 0.1), (2, 0.8), (3, 0.6)]]
    fig = show_training(hist)
    loss_ax, val_ax = fig.axes
    assert loss_ax.get_ylabel() and val_ax.get_ylabel() and val_ax.get_ylim()[1] <= 1.05
    assert "epoch 2" in " ".join(t.get_text() for t in val_ax.get_legend().get_texts())
    ax = show_patches(np.zeros((10, 10)), np.array([[True, False], [False, False]]), 5)
    assert ax.images[-1].get_array()[0, 0, 3] > 0 and ax.images[-1].get_array()[9, 9, 3] == 0


def test_demo_profile_and_size_notes():
    from busnb import nb
    from busnb.config import get_profile

    demo, smoke = get_profile("demo"), get_profile("smoke")
    assert (demo.dataset, demo.image_size, demo.encoder, demo.decoder_channels) == \
        (smoke.dataset, smoke.image_size, smoke.encoder, smoke.decoder_channels)
    assert demo.epochs * demo.steps_per_epoch > 5 * smoke.epochs * smoke.steps_per_epoch
    nb.check_params(profile="demo")
    assert "mean nothing" in nb.size_note("smoke") and "not enough to rank" in nb.size_note(demo)
    assert nb.size_note("gpu") == ""
    assert nb.replace_stale("") and not nb.replace_stale("runs/x")   # only the scratch folder is retrained over


def test_every_notebook_that_trains_retrains_a_stale_run_in_its_own_scratch_folder():
    """A notebook opened after the code changed must not stop on a RunConflict in its own
    ``runs/interactive-<profile>`` folder: each one that trains takes ``force = nb.replace_stale(run_dir)`` before
    ``nb.context`` replaces ``run_dir`` with a path, and hands it to every training call."""
    import json
    import re
    from pathlib import Path

    calls = ("run_experiment(", "trained_method(", "run_volume_experiment(")
    trains = []
    for path in sorted(Path(__file__).resolve().parents[1].joinpath("notebooks").glob("*.ipynb")):
        code = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"]
                          if c["cell_type"] == "code")
        found = [m.start() for c in calls for m in re.finditer(r"\b" + re.escape(c), code)]
        if not found:
            continue
        trains.append(path.name)
        assert "force = nb.replace_stale(run_dir)" in code, path.name
        assert code.index("force = nb.replace_stale(run_dir)") < code.index("nb.context(profile, run_dir"), path.name
        for start in found:
            depth, end = 0, start
            for end in range(code.index("(", start), len(code)):
                depth += {"(": 1, ")": -1}.get(code[end], 0)
                if depth == 0:
                    break
            assert "force" in code[start:end], f"{path.name}: {code[start:end + 1]}"
    assert {"03_uewf_entropy_maps.ipynb", "07_vision_language.ipynb", "09_volumes_3d.ipynb"} <= set(trains)


def test_size_dir_resolves_in_the_checkout(tmp_path, monkeypatch):
    """06's ``size_dir`` is relative to the checkout, so it works from notebooks/ as from the repo root; a folder
    that is nowhere stops at the parameter check with the name of the parameter."""
    import pytest

    from busnb import nb
    from busnb.paths import repo_root

    monkeypatch.chdir(tmp_path)
    assert nb.in_repo("splits/busi") == repo_root() / "splits/busi"
    assert nb.in_repo(tmp_path) == tmp_path
    nb.check_params(profile="demo", size_dir="splits/busi")
    with pytest.raises(ValueError, match="size_dir='results/nowhere'"):
        nb.check_params(profile="demo", size_dir="results/nowhere")
    nb.check_params(profile="demo", glance_dirs={"10 %": "splits/busi"})  # 06's overview folders resolve the same way
    with pytest.raises(ValueError, match=r"glance_dirs\['10 %'\]='results/nowhere'"):
        nb.check_params(profile="demo", glance_dirs={"10 %": "results/nowhere"})


def test_kernels_talk_over_ipc_with_their_own_sockets():
    import os

    from busnb.runner import kernel_manager_class

    km = kernel_manager_class()
    if os.name != "posix":
        assert km is None
        return
    a, b = km(), km()
    assert a.transport == b.transport == "ipc" and os.path.isabs(a.ip) and a.ip != b.ip


def test_class_summary_counts_per_class():
    import pandas as pd

    from busnb.data.stats import class_summary

    stats = pd.DataFrame({"id": list("abcd"), "class": ["benign", "benign", "malignant", "malignant"],
                          "n_mask_files": [1, 3, 1, 1], "width": [500, 600, 400, 401], "height": [400, 400, 300, 301],
                          "lesion_fraction": [0.005, 0.2, 0.1, 0.3]})
    t = class_summary(stats)
    assert t.loc["benign", "images"] == 2 and t.loc["benign", "multi_mask_images"] == 1
    assert t.loc["benign", "extra_mask_files"] == 2 and t.loc["benign", "lesions_at_most_1pct"] == 1
    assert t.loc["malignant", "median_width"] == 400 and t.loc["malignant", "median_lesion_pct"] == 20.0


def test_a_notebook_progress_bar_leaves_its_final_line_for_static_renderings(monkeypatch):
    """In a kernel, busnb's bar is tqdm's widget shown under a display id; when it closes, the display is updated
    with its final line as text/plain (what nbconvert / a static viewer shows; before, the bar's opening "0/7"
    stayed there). A bar that does not stay leaves no line behind."""
    import IPython.display

    from busnb import progress

    shown = []

    class Handle:
        def __init__(self):
            self.updates = []

        def update(self, obj, raw=False):
            self.updates.append((obj, raw))

    def display(obj, display_id=None):
        shown.append((obj, display_id, Handle()))
        return shown[-1][2]

    monkeypatch.setattr(IPython.display, "display", display)
    for _ in progress.notebook_bar()(range(7), desc="load"):
        pass
    (widget, display_id, handle), = shown
    assert display_id is True
    (bundle, raw), = handle.updates
    assert raw and bundle["text/plain"].startswith("load: 100%") and "7/7" in bundle["text/plain"]
    assert "application/vnd.jupyter.widget-view+json" in bundle  # the live widget stays the same
    for _ in progress.notebook_bar()(range(3), leave=False):
        pass
    assert shown[-1][2].updates == [({"text/plain": ""}, True)]
    for _ in progress.notebook_bar()(range(3), disable=True):
        pass
    assert len(shown) == 2  # a disabled bar displays nothing
