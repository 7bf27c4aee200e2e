"""Result tables: mean ± std over seeds, one comparison table per dataset and labeled ratio."""
import json

import pytest


def _write(root, method, ratio, seed, dice, hd95=50.0, dataset="busi"):
    d = root / f"{method}-{dataset}-r{ratio}-s{seed}"
    d.mkdir(parents=True)
    test = {"dice": dice, "iou": dice - 0.1, "hd95": hd95, "asd": 1.0, "n_empty_pred": 0}
    (d / "metrics.json").write_text(json.dumps({"dataset": dataset, "method": method, "ratio": ratio, "seed": seed,
                                                "profile": "cpu", "best_val_dice": 0.5, "test": test}))


def test_comparison_tables_per_dataset_and_ratio(tmp_path):
    from busnb.results import collect, comparison_tables

    _write(tmp_path, "cps", 2.5, 0, 0.40)
    _write(tmp_path, "cps", 2.5, 1, 0.50)
    _write(tmp_path, "supervised", 2.5, 0, 0.60, hd95=float("nan"))
    _write(tmp_path, "supervised", 10.0, 0, 0.70)
    _write(tmp_path, "supervised", 2.5, 0, 0.90, dataset="phantom")
    tables = comparison_tables(collect(tmp_path))
    assert set(tables) == {("busi", 2.5), ("busi", 10.0), ("phantom", 2.5)}
    t = tables[("busi", 2.5)]
    assert list(t.index) == ["supervised", "cps"]          # lower bound first, then baselines in order
    assert t.loc["cps", "dice"] == "45.00 ± 7.07"          # sample std of 40 and 50
    assert t.loc["cps", "runs"] == "2 (seeds 0, 1)" and t.loc["supervised", "runs"] == "1 (seed 0)"
    assert t.loc["supervised", "dice"] == "60.00"          # one seed: the value alone
    assert t.loc["supervised", "hd95"] == "n/a"            # NaN HD95 is not averaged as a number
    assert tables[("busi", 10.0)].loc["supervised", "iou"] == "60.00"


def test_variant_groups_expand():
    from busnb.methods import BASELINES, expand_variants

    assert expand_variants(["baselines"]) == BASELINES
    assert expand_variants(["supervised", "baselines", "dual_teacher"])[:2] == ("supervised", "mean_teacher")
    with pytest.raises(ValueError, match="unknown variant 'nope'"):
        expand_variants(["nope"])


def test_report_tables_show_each_table_once(tmp_path):
    from busnb.results import collect, report_tables

    _write(tmp_path, "appg_static_teacher", 2.5, 0, 0.80, dataset="phantom")
    _write(tmp_path, "dual_teacher", 2.5, 0, 0.70, dataset="phantom")
    t = report_tables(collect(tmp_path))
    assert list(t) == ["compare_phantom_2.5%"]           # one ratio, no ablation rows: nothing else repeats it
    assert list(t["compare_phantom_2.5%"].columns) == ["Dice (%)", "IoU (%)", "HD95 (px)", "runs (seeds)"]
    _write(tmp_path, "+uewf", 2.5, 0, 0.60, dataset="phantom")
    _write(tmp_path, "dual_teacher", 10.0, 0, 0.75, dataset="phantom")
    t = report_tables(collect(tmp_path))
    assert {"ratios_dice", "ablation_dice", "compare_phantom_10%"} <= set(t)
    assert list(t["ablation_dice"].index.get_level_values("method")) == ["appg_static_teacher", "+uewf", "dual_teacher"]
    assert report_tables(collect(tmp_path / "none")) == {}


def test_pseudo_label_table_only_for_runs_that_report_it(tmp_path):
    """dusss runs write pseudo_label_dice; the report gains one table with teacher, refined and their
    difference (mean ± std over seeds); dusss sits among the comparison rows before the dual-teacher rows."""
    from busnb.results import collect, report_tables

    _write(tmp_path, "supervised", 2.5, 0, 0.50)
    assert "pseudo_labels" not in report_tables(collect(tmp_path))
    for seed, (t, r) in enumerate([(0.60, 0.64), (0.62, 0.64)]):  # runs from before the base-rate alignment
        _write(tmp_path, "dusss", 2.5, seed, 0.55)
        f = tmp_path / f"dusss-busi-r2.5-s{seed}" / "metrics.json"
        m = json.loads(f.read_text())
        f.write_text(json.dumps({**m, "pseudo_label_dice": {"teacher": t, "refined": r, "n": 440}}))
    _write(tmp_path, "dusss", 10.0, 0, 0.60)
    f = tmp_path / "dusss-busi-r10.0-s0" / "metrics.json"
    f.write_text(json.dumps({**json.loads(f.read_text()),
                             "pseudo_label_dice": {"teacher": 0.5, "aligned": 0.55, "refined": 0.56, "n": 400},
                             "map_auc": {"teacher": 0.885, "map": 0.627, "refined": 0.88, "n": 400, "stride": 1},
                             "flips": {"changed": 0.02, "right": 0.3, "dice_at_teacher_area": 0.5, "n": 400}}))
    _write(tmp_path, "dual_teacher", 2.5, 0, 0.60)
    tabs = report_tables(collect(tmp_path))
    pl = tabs["pseudo_labels"]
    row = pl.loc[("busi", "dusss", "2.5 %")]
    assert row["teacher (%)"] == "61.00 ± 1.41" and row["text-refined (%)"] == "64.00 ± 0.00"
    assert row["aligned (%)"] == row["teacher (%)"]  # no alignment: the teacher's labels
    assert row["refined - aligned"] == "3.00 ± 1.41" and row["runs (seeds)"] == "2 (seeds 0, 1)"
    row = pl.loc[("busi", "dusss", "10 %")]
    assert row["aligned (%)"] == "55.00" and row["teacher (%)"] == "50.00"
    assert row["refined - aligned"] == "1.00"  # the text map's own change, not the alignment's
    assert row["pixel AUC teacher"] == "0.885" and row["pixel AUC text map"] == "0.627"
    assert row["flips right (%)"] == "30.0" and row["refined at teacher area (%)"] == "50.00"
    assert pl.loc[("busi", "dusss", "2.5 %")]["pixel AUC text map"] == ""  # runs from before map_auc
    assert pl.loc[("busi", "dusss", "2.5 %")]["flips right (%)"] == ""  # and before flips
    assert len(pl) == 2  # the runs without pseudo-label Dice are not rows
    assert list(tabs["compare_busi_2.5%"].index) == ["supervised", "dusss", "dual_teacher"]
    assert row["best single candidate (%)"] == "" and row["rank corr. text map"] == ""  # before busnb pool-report
    # a pool_report.json written after the run fills what its metrics.json lacks, never overrides it
    (tmp_path / "dusss-busi-r10.0-s0" / "pool_report.json").write_text(json.dumps(
        {"pseudo_label_dice": {"teacher": 0.9, "refined": 0.9, "n": 400},
         "selection": {"oracle": 0.58, "multi": 0.25, "n": 400},
         "confidence": {"map": 0.35, "teacher": 0.75, "n": 390}}))
    row = report_tables(collect(tmp_path))["pseudo_labels"].loc[("busi", "dusss", "10 %")]
    assert row["teacher (%)"] == "50.00" and row["best single candidate (%)"] == "58.00"
    assert row["several candidates (%)"] == "25.0"
    assert row["rank corr. text map"] == "0.350" and row["rank corr. teacher"] == "0.750"
    from busnb.results import markdown_summary

    md = markdown_summary(tmp_path)  # the README's table command prints it after the test metrics
    assert md.index("test dice") < md.index("best single candidate (%)") and "| 58.00 " in md
    assert "best single candidate" not in markdown_summary(tmp_path / "supervised-busi-r2.5-s0")


def test_folder_table_one_row_per_folder(tmp_path):
    """Runs of one variant name with different settings are told apart by their folder: one row per
    sub-folder, mean ± std over the seeds below it; folders without runs are left out."""
    import subprocess
    import sys

    from busnb.results import folder_table

    _write(tmp_path / "cps-joint", "cps", 2.5, 0, 0.30)
    _write(tmp_path / "cps-joint", "cps", 2.5, 1, 0.40)
    _write(tmp_path / "cps-separate", "cps", 2.5, 0, 0.50)
    (tmp_path / "empty").mkdir()
    for seed, worst in ((0, 0.12), (1, 0.55)):  # seed 1 collapsed at one epoch
        hist = [{"epoch": 1, "val_empty": 0.0}, {"epoch": 2, "val_empty": worst}, {"epoch": 3}]
        (tmp_path / "cps-joint" / f"cps-busi-r2.5-s{seed}" / "history.json").write_text(json.dumps(hist))
    _write(tmp_path / "bcp" / "_stages", "bcp_pretrain", 2.5, 0, 0.20)  # a stage's own score, published by a run
    _write(tmp_path / "bcp", "bcp", 2.5, 0, 0.60)
    _write(tmp_path / "_stages", "appg_static_teacher", 2.5, 0, 0.55)  # runs written straight into tmp_path
    t = folder_table(tmp_path)
    assert t.loc["_stages: appg_static_teacher (stage)", "Dice (%)"] == "55.00" and "_stages" not in t.index
    t = t.drop("_stages: appg_static_teacher (stage)")
    assert t.loc["cps-joint", "max val_empty"] == "0.55" and t.loc["cps-separate", "max val_empty"] == ""
    assert t.loc["bcp", "Dice (%)"] == "60.00" and t.loc["bcp: bcp_pretrain (stage)", "Dice (%)"] == "20.00"
    t = t.drop(["bcp", "bcp: bcp_pretrain (stage)"])
    assert list(t.index) == ["cps-joint", "cps-separate"]
    assert t.loc["cps-joint", "Dice (%)"] == "35.00 ± 7.07" and t.loc["cps-joint", "runs (seeds)"] == "2 (seeds 0, 1)"
    assert t.loc["cps-separate", "Dice (%)"] == "50.00"
    out = subprocess.run([sys.executable, "-m", "busnb.results", "--by-folder", str(tmp_path)], capture_output=True,
                         text=True, check=True).stdout
    assert "cps-separate" in out and "35.00 ± 7.07" in out


def test_a_stage_score_left_behind_by_a_retrained_run_is_not_counted(tmp_path):
    """A run retrained after a code change names a new stage key; the old stage's published score stays in the
    folder but is stale, so it is no second seed of the stage's row. A stage no run names, in a folder where no run
    names any stage of its kind, is kept."""
    from busnb.results import collect

    _write(tmp_path, "+static", 2.5, 0, 0.60)
    run = tmp_path / "+static-busi-r2.5-s0" / "metrics.json"
    run.write_text(json.dumps({**json.loads(run.read_text()), "stages": [{"kind": "static_teacher", "key": "new"}]}))
    for key, dice in (("old", 0.50), ("new", 0.55)):
        _write(tmp_path / "_stages", "appg_static_teacher", 2.5, 0, dice)
        (tmp_path / "_stages" / "appg_static_teacher-busi-r2.5-s0").rename(tmp_path / "_stages" / f"static_teacher-{key}")
    _write(tmp_path / "_stages", "bcp_pretrain", 2.5, 0, 0.40)
    (tmp_path / "_stages" / "bcp_pretrain-busi-r2.5-s0").rename(tmp_path / "_stages" / "bcp_pretrain-k")
    df = collect(tmp_path).set_index("method")
    assert sorted(df.index) == ["+static", "appg_static_teacher", "bcp_pretrain"]
    assert df.loc["appg_static_teacher", "dice"] == 0.55  # the stage the run uses, not the one left behind


def test_write_results_and_summaries(tmp_path):
    import numpy as np
    import pandas as pd

    from busnb.results import all_lesion_dice, collect, per_image_summary, report_tables, write_results

    _write(tmp_path, "dual_teacher", 2.5, 0, 0.70, dataset="phantom")
    df = collect(tmp_path)
    js, md = write_results(tmp_path, "demo", df, report_tables(df))
    assert json.loads(js.read_text())["runs"][0]["method"] == "dual_teacher" and "70.00" in md.read_text()
    s = per_image_summary(pd.DataFrame({"dice": [0.5, 0.7], "iou": [0.4, 0.6], "hd95": [3.0, 5.0], "asd": [1.0, 1.0]}))
    assert s.loc["Dice (%)", "mean ± std"] == "60.0 ± 14.1" and "IoU (%)" in s.index and s.loc["HD95 (px)", "max"] == "5.0"
    m = np.zeros((4, 4), bool)
    m[:2, :2] = True                                      # 4 of 16 pixels: Dice of 'all lesion' = 8 / 20
    assert all_lesion_dice([m]) == pytest.approx(0.4)


def _per_image(run, gt, pred, dice):
    import pandas as pd

    pd.DataFrame({"id": [f"i{k}" for k in range(len(gt))], "dice": dice, "gt_frac": gt,
                  "pred_frac": pred}).to_csv(run / "test_per_image.csv", index=False)


def test_size_table_bins_by_true_lesion_size(tmp_path):
    """Bins are equal-count bins of the true lesion size; a cell is the bin's mean Dice, its paired difference to
    the reference row and the median predicted/true area; an image without a lesion is in no bin."""
    import subprocess
    import sys

    import pytest

    from busnb.results import size_table

    gt = [0.01, 0.02, 0.10, 0.20, 0.0]  # the last image has no lesion
    for seed, (ref_dice, m_dice) in enumerate([([0.6, 0.6, 0.8, 0.8, 1.0], [0.4, 0.5, 0.9, 0.9, 0.0]),
                                               ([0.7, 0.7, 0.8, 0.8, 1.0], [0.5, 0.6, 0.9, 0.9, 0.0])]):
        _write(tmp_path / "supervised", "supervised", 10.0, seed, 0.7)
        _write(tmp_path / "bcp", "bcp", 10.0, seed, 0.7)
        _per_image(tmp_path / "supervised" / f"supervised-busi-r10.0-s{seed}", gt, gt, ref_dice)
        _per_image(tmp_path / "bcp" / f"bcp-busi-r10.0-s{seed}", gt, [0.02, 0.06, 0.1, 0.2, 0.3], m_dice)
    _write(tmp_path / "bcp" / "_stages", "bcp_pretrain", 10.0, 0, 0.2)  # published stage score: no per-image table
    t = size_table(tmp_path, n_bins=2)
    small, large = t.columns[:2]
    assert small.startswith("smallest 1.0–") and large.startswith("largest ")
    # bcp, small bin: Dice (0.45 + 0.55) / 2 = 50.0, paired Δ = (0.45 - 0.6 + 0.55 - 0.7) / 2 = -15.0, area 2.5×
    assert t.loc["bcp", small] == "50.0 (-15.0) · 2.50×"
    assert t.loc["bcp", large] == "90.0 (+10.0) · 1.00×"
    assert t.loc["supervised", small] == "65.0 · 1.00×"  # the reference has no Δ
    assert t.loc["bcp", "runs (seeds)"] == "2 (seeds 0, 1)" and list(t.index) == ["supervised", "bcp"]
    out = subprocess.run([sys.executable, "-m", "busnb.results", "--by-size", str(tmp_path), "--bins", "2"],
                         capture_output=True, text=True, check=True).stdout
    assert "50.0 (-15.0) · 2.50×" in out
    with pytest.raises(ValueError, match="no row 'supervisd'.*rows: \\['bcp', 'supervised'\\]"):
        size_table(tmp_path, ref="supervisd")
    # a per-image table from before the size columns: the error names the file and how to rescore
    bad = tmp_path / "bcp" / "bcp-busi-r10.0-s0" / "test_per_image.csv"
    bad.write_text("id,dice\ni0,0.5\n")
    with pytest.raises(ValueError, match=r"test_per_image\.csv.*busnb evaluate"):
        size_table(tmp_path)


def test_paired_table_differences_by_seed(tmp_path):
    """A row minus its reference at the same seed, over the seeds both have; by default every row against
    ``ref``; explicit pairs; an unknown row, a pair without a common seed or two runs of one seed in a row is an
    error naming them."""
    import shutil
    import subprocess
    import sys

    from busnb.results import paired_table

    for seed, (sup, ssl, dt) in enumerate([(0.50, 0.52, 0.60), (0.30, 0.36, 0.62), (0.45, 0.44, 0.58)]):
        _write(tmp_path / "supervised", "supervised", 2.5, seed, sup)
        _write(tmp_path / "supervised-ssl", "supervised", 2.5, seed, ssl)
        if seed < 2:
            _write(tmp_path / "dual_teacher", "dual_teacher", 2.5, seed, dt)
    _write(tmp_path / "dual_teacher" / "_stages", "appg_static_teacher", 2.5, 0, 0.99)  # not a run of the row
    t = paired_table(tmp_path)
    assert list(t.index) == ["dual_teacher", "supervised-ssl"]
    assert t.loc["supervised-ssl", "per seed"] == "+2.00 / +6.00 / -1.00"
    assert t.loc["supervised-ssl", "Δ Dice (%)"] == "2.33 ± 3.51" and t.loc["supervised-ssl", "above"] == "2 of 3"
    assert t.loc["dual_teacher", "per seed"] == "+10.00 / +32.00" and t.loc["dual_teacher", "seeds"] == "0, 1"
    t = paired_table(tmp_path, pairs=[("dual_teacher", "supervised-ssl")])
    assert t.loc["dual_teacher", "reference"] == "supervised-ssl" and t.loc["dual_teacher", "above"] == "2 of 2"
    with pytest.raises(ValueError, match="no row 'bcp'"):
        paired_table(tmp_path, pairs=[("bcp", "supervised")])
    _write(tmp_path / "late", "supervised", 2.5, 7, 0.1)
    with pytest.raises(ValueError, match="no seed in common"):
        paired_table(tmp_path, pairs=[("late", "supervised")])
    _write(tmp_path / "late", "supervised", 10, 7, 0.2)  # a second run of seed 7 in one row: ambiguous
    with pytest.raises(ValueError, match="more than one run of seed 7"):
        paired_table(tmp_path)
    shutil.rmtree(tmp_path / "late")
    out = subprocess.run([sys.executable, "-m", "busnb.results", "--paired", str(tmp_path),
                          "supervised-ssl:supervised"], capture_output=True, text=True, check=True).stdout
    assert "+2.00 / +6.00 / -1.00" in out and "dual_teacher" not in out
    bad = subprocess.run([sys.executable, "-m", "busnb.results", "--paired", str(tmp_path), "supervised-ssl"],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "ROW:REFERENCE" in bad.stderr


def test_grid_table_lays_rows_against_settings_with_paired_differences(tmp_path):
    """One cell per (row, column): the folder ``root/<row><suffix>``, mean ± std over seeds and the paired Δ to
    the reference row of the same column with the count of seeds above; a missing folder is '—'; a default row
    absent everywhere is left out, an explicit one is an error; the CLI builds columns from LABEL=DIR ×
    starts."""
    import subprocess
    import sys

    from busnb.results import grid_columns, grid_table

    for seed, (sup, mt, sup_s, mt_s) in enumerate([(0.50, 0.55, 0.60, 0.58), (0.40, 0.38, 0.50, 0.56)]):
        _write(tmp_path / "r10" / "supervised", "supervised", 10, seed, sup)
        _write(tmp_path / "r10" / "mean_teacher", "mean_teacher", 10, seed, mt)
        _write(tmp_path / "r10" / "supervised-ssl", "supervised", 10, seed, sup_s)
        _write(tmp_path / "r10" / "mean_teacher-ssl", "mean_teacher", 10, seed, mt_s)
    _write(tmp_path / "r10" / "mean_teacher" / "_stages", "bcp_pretrain", 10, 0, 0.99)  # not a run of the row
    (tmp_path / "r2").mkdir()
    cols = [("10 %", tmp_path / "r10", ""), ("10 %, ssl", tmp_path / "r10", "-ssl"), ("2.5 %", tmp_path / "r2", "")]
    assert grid_columns({"10 %": tmp_path / "r10"}, {"": "", "ssl": "-ssl"}) == cols[:2]
    t = grid_table(cols)
    assert list(t.index) == ["supervised", "mean_teacher"]
    assert t.loc["supervised", "10 %"] == "45.00 ± 7.07" and t.loc["supervised", "2.5 %"] == "—"
    assert t.loc["mean_teacher", "10 %"] == "46.50 ± 12.02 (+1.50, 1/2)"
    assert t.loc["mean_teacher", "10 %, ssl"] == "57.00 ± 1.41 (+2.00, 1/2)"
    with pytest.raises(ValueError, match="row 'cps' has no folder"):
        grid_table(cols, rows=["supervised", "cps"])
    with pytest.raises(ValueError, match="is no folder"):
        grid_table([("x", tmp_path / "nowhere", "")])
    out = subprocess.run([sys.executable, "-m", "busnb.results", "--grid", f"10 %={tmp_path / 'r10'}",
                          "--starts", "scratch=", "ssl=-ssl", "--rows", "mean_teacher"],
                         capture_output=True, text=True, check=True).stdout
    assert "10 %, scratch" in out and "10 %, ssl" in out and "(+2.00, 1/2)" in out and "supervised" not in out
    bad = subprocess.run([sys.executable, "-m", "busnb.results", "--grid", str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode != 0 and "LABEL=VALUE" in bad.stderr


def test_pack_keeps_the_run_text_files_and_leaves_checkpoints_behind(tmp_path):
    import subprocess
    import sys
    import tarfile

    from busnb.results import collect, pack

    src = tmp_path / "sweep"
    _write(src, "supervised", 2.5, 0, 0.60)
    _write(src, "dual_teacher", 2.5, 0, 0.70)
    run = src / "supervised-busi-r2.5-s0"
    for name in ("history.json", "run.json", "test_per_image.csv"):
        (run / name).write_text("{}")
    for name in ("best.pt", "last.pt", "pred.png"):  # checkpoints and images stay behind
        (run / name).write_bytes(b"\0" * 64)
    (src / "logs").mkdir()
    (src / "logs" / "supervised-busi-r2.5-s0.log").write_text("epoch 1\n")
    (src / "sweep.json").write_text("{}")
    archive = tmp_path / "out" / "device-sweep.tar.gz"
    names = pack(src, archive)
    with tarfile.open(archive) as tar:
        members = sorted(tar.getnames())
        tar.extractall(tmp_path / "back", **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    assert members == sorted(names) == sorted([
        "dual_teacher-busi-r2.5-s0/metrics.json", "logs/supervised-busi-r2.5-s0.log", "sweep.json",
        "supervised-busi-r2.5-s0/history.json", "supervised-busi-r2.5-s0/metrics.json",
        "supervised-busi-r2.5-s0/run.json", "supervised-busi-r2.5-s0/test_per_image.csv"])
    back = collect(tmp_path / "back").set_index("method")["dice"].to_dict()
    assert back == {"dual_teacher": 0.70, "supervised": 0.60}  # the unpacked tree is read like the sweep folder
    assert [p.name for p in archive.parent.iterdir()] == ["device-sweep.tar.gz"]  # written atomically, no leftovers

    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no run files"):
        pack(tmp_path / "empty", tmp_path / "x.tar.gz")
    r = subprocess.run([sys.executable, "-m", "busnb.results", "--pack", str(tmp_path / "missing"),
                        str(tmp_path / "y.tar.gz")], capture_output=True, text=True)
    assert r.returncode != 0 and "is not a folder" in r.stderr and not (tmp_path / "y.tar.gz").exists()


def test_the_qualitative_figure_skips_3d_runs():
    """06 after 09 in one run folder: the 3D run's row (dataset phantom3d) has no 2D image to draw; it used to
    be taken as the first row and crash the figure."""
    import pandas as pd

    from busnb.config import get_profile
    from busnb.results import predictions_by_variant

    df = pd.DataFrame([{"dataset": "phantom3d", "ratio": 10.0, "seed": 0, "method": "dual_uncertainty",
                        "path": "nowhere"}])
    assert predictions_by_variant(df, get_profile("smoke")) == ([], [])
