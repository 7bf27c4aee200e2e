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
    assert t.loc["cps", "seeds"] == "0,1" and t.loc["cps", "n"] == 2
    assert t.loc["supervised", "dice"] == "60.00"          # one seed: the value alone
    assert t.loc["supervised", "hd95"] == "n/a"            # NaN HD95 is not averaged as a number
    assert tables[("busi", 10.0)].loc["supervised", "iou"] == "60.00"


def test_variant_groups_expand():
    from busnb.methods import BASELINES, expand_variants

    assert expand_variants(["baselines"]) == BASELINES
    assert expand_variants(["supervised", "baselines", "dual_teacher"])[:2] == ("supervised", "mean_teacher")
    with pytest.raises(ValueError, match="unknown variant 'nope'"):
        expand_variants(["nope"])
