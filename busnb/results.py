"""Collect ``metrics.json`` files of a run into tables (mean +- std over seeds)."""
from __future__ import annotations

import json
from pathlib import Path

from .rundir import PUBLISHED_STAGES


def collect(run_dir: str | Path):
    """One row per trained model found under ``run_dir`` (any depth). A stage's score published beside the runs
    (``_stages/<kind>-<key>/``) is left out when it is stale: no run found here names it in its ``stages`` while
    some run names another stage of that kind. (A run retrained after a code change uses a new stage key and
    leaves the old stage's score behind, which would otherwise count as a second seed.)"""
    import pandas as pd

    rows, used, published = [], set(), {}
    for p in sorted(Path(run_dir).rglob("metrics.json")):
        m = json.loads(p.read_text())
        if "test" not in m:
            continue
        if PUBLISHED_STAGES in p.relative_to(Path(run_dir)).parts[:-2]:
            published[len(rows)] = p.parent.name
        used.update(f"{st['kind']}-{st['key']}" for st in m.get("stages") or [] if "kind" in st and "key" in st)
        variant = m.get("variant") or m["method"]
        pool = p.parent / "pool_report.json"  # busnb pool-report: the same report, recomputed after the run
        m = {**(json.loads(pool.read_text()) if pool.is_file() else {}), **m}
        pl = m.get("pseudo_label_dice") or {}
        auc, flips = m.get("map_auc") or {}, m.get("flips") or {}
        sel, conf = m.get("selection") or {}, m.get("confidence") or {}
        rows.append({"dataset": m["dataset"], "method": variant, "ratio": m["ratio"], "seed": m["seed"],
                     "profile": m["profile"], "val_dice": m["best_val_dice"],
                     **{k: m["test"][k] for k in ("dice", "iou", "hd95", "asd", "n_empty_pred")},
                     "pl_teacher": pl.get("teacher", float("nan")),
                     "pl_aligned": pl.get("aligned", pl.get("teacher", float("nan"))),  # no alignment: the teacher's
                     "pl_refined": pl.get("refined", float("nan")),
                     "auc_teacher": auc.get("teacher", float("nan")), "auc_map": auc.get("map", float("nan")),
                     "flips_right": flips.get("right", float("nan")),
                     "pl_at_teacher_area": flips.get("dice_at_teacher_area", float("nan")),
                     "pl_oracle": sel.get("oracle", float("nan")), "multi": sel.get("multi", float("nan")),
                     "rho_map": conf.get("map", float("nan")), "rho_teacher": conf.get("teacher", float("nan")),
                     "val_empty_max": max_val_empty(p.parent / "history.json"), "path": str(p.parent)})
    kinds = {u.rsplit("-", 1)[0] for u in used}  # a published stage is stale once a run uses another of its kind
    rows = [r for i, r in enumerate(rows)
            if i not in published or published[i] in used or published[i].rsplit("-", 1)[0] not in kinds]
    return pd.DataFrame(rows)


def max_val_empty(history: Path) -> float:
    """The largest ``val_empty`` (share of validation images predicted empty) over a run's epochs: the
    collapse check (a run whose networks agree on background everywhere predicts empty masks); NaN when the
    run has no ``history.json`` or logged no ``val_empty``."""
    try:
        vals = [e["val_empty"] for e in json.loads(Path(history).read_text()) if "val_empty" in e]
    except FileNotFoundError:
        return float("nan")
    return max(vals) if vals else float("nan")


def table(df, index=("dataset", "method"), columns="ratio", metric: str = "dice", scale: float = 100.0):
    """Pivot of ``metric`` as 'mean +- std (n)' strings over seeds."""
    if df.empty:
        return df
    g = df.groupby(list(index) + [columns])[metric]
    agg = g.agg(["mean", "std", "count"]).reset_index()

    def fmt(r):
        s = f"{r['mean'] * scale:.2f}"
        if r["count"] > 1:
            s += f" ± {r['std'] * scale:.2f}"
        return s + f" (n={int(r['count'])})"

    agg["cell"] = agg.apply(fmt, axis=1)
    out = agg.pivot(index=list(index), columns=columns, values="cell")
    out.columns = [f"{c:g} %" if isinstance(c, float) else str(c) for c in out.columns]
    return out


ABLATION_ORDER = ("supervised", "baseline", "appg_static_teacher", "+static", "+dual_ema", "+uewf",
                  "+patch_smoothing", "+aurcl", "dual_teacher")


def ablation_table(df, metric: str = "dice", scale: float = 100.0):
    """Rows in the paper's ablation order (variants present in ``df``), columns = labeled ratio."""
    t = table(df, metric=metric, scale=scale)
    if t.empty:
        return t
    order = {v: i for i, v in enumerate(ABLATION_ORDER)}
    idx = sorted(t.index, key=lambda ix: (ix[0], order.get(ix[1], len(order)), ix[1]))
    return t.loc[idx]


COMPARISON_ORDER = ("supervised", "baseline", "mean_teacher", "cps", "bcp", "dual_uncertainty", "dusss",
                    "appg_static_teacher", "+static", "dual_teacher")


def _mean_std(values, scale: float, digits: int) -> str:
    import numpy as np

    v = np.asarray([x for x in values if x == x], dtype=float) * scale  # NaN (e.g. HD95 policy) left out
    if v.size == 0:
        return "n/a"
    s = f"{v.mean():.{digits}f}"
    return s + (f" ± {v.std(ddof=1):.{digits}f}" if v.size > 1 else "")


def _runs(seeds) -> str:
    """'1 (seed 0)', '3 (seeds 0, 1, 2)': how many trained models a row averages, and their seeds."""
    s = sorted(int(x) for x in seeds)
    return f"{len(s)} (seed{'s' if len(s) > 1 else ''} {', '.join(map(str, s))})"


def comparison_tables(df, metrics=(("dice", 100.0, 2), ("iou", 100.0, 2), ("hd95", 1.0, 1))):
    """One table per (dataset, labeled ratio): a row per method, test metrics as 'mean ± std' over
    seeds (sample std, ddof=1; a single seed shows the value alone), plus ``runs``: how many trained
    models the row averages and their seeds ('2 (seeds 0, 1)'). Methods in ``COMPARISON_ORDER``, then
    any others alphabetically."""
    import pandas as pd

    out = {}
    if df.empty:
        return out
    order = {v: i for i, v in enumerate(COMPARISON_ORDER)}
    for (dataset, ratio), g in df.groupby(["dataset", "ratio"], sort=True):
        rows = []
        for method, gm in sorted(g.groupby("method"), key=lambda kv: (order.get(kv[0], len(order)), kv[0])):
            row = {"method": method}
            for m, scale, digits in metrics:
                row[m] = _mean_std(gm[m], scale, digits)
            row["runs"] = _runs(gm["seed"])
            rows.append(row)
        out[(dataset, float(ratio))] = pd.DataFrame(rows).set_index("method")
    return out


COLUMN_NAMES = {"dice": "Dice (%)", "iou": "IoU (%)", "hd95": "HD95 (px)", "runs": "runs (seeds)"}


def report_tables(df) -> dict:
    """Every result table of ``df`` once, under its name: ``compare_<dataset>_<ratio>%`` (one per dataset and
    labeled ratio; all methods, Dice / IoU / HD95), ``ratios_<metric>`` (method x labeled ratio) only when
    there is more than one ratio, and ``ablation_<metric>`` only when ``df`` holds ablation rows (variants
    other than the full method, the supervised baseline and the static teacher). Each holds different
    numbers, so none repeats another; column names carry their units."""
    out = {}
    if df.empty:
        return out
    for (ds, r), t in comparison_tables(df).items():
        out[f"compare_{ds}_{r:g}%"] = t.rename(columns=COLUMN_NAMES)
    ablation_rows = set(df["method"]) & (set(ABLATION_ORDER) - {"supervised", "baseline", "appg_static_teacher",
                                                                 "dual_teacher"})
    for m in ("dice", "iou"):
        if df["ratio"].nunique() > 1:
            out[f"ratios_{m}"] = table(df, metric=m)
        if ablation_rows:
            out[f"ablation_{m}"] = ablation_table(df, metric=m)
    if "pl_teacher" in df and df["pl_teacher"].notna().any():
        out["pseudo_labels"] = pseudo_label_table(df)
    return out


def pseudo_label_table(df):
    """Runs that report the Dice of their pseudo-labels on the unlabeled pool (``dusss``: the final teacher's
    raw, base-rate aligned and text-refined; reporting only): one row per dataset, method and ratio, mean ± std
    over seeds in %, the text map's own change (refined - aligned; runs without alignment: - teacher), and the
    pixel ROC AUC of the teacher's probability and of the text map (``map_auc``), the share of the refinement's
    flips that are right and the refined label's Dice at the teacher's own area (``flips``), the selection's
    ceiling (``selection``: Dice with the best single candidate per image, share of images with several) and the
    rank correlation of the map's and the teacher's per-image confidence with the label's Dice (``confidence``);
    blank for runs without them. A run's ``pool_report.json`` (``busnb pool-report``) fills what its
    ``metrics.json`` lacks."""
    import pandas as pd

    g = df[df["pl_teacher"].notna()]
    rows = []
    for (ds, method, ratio), gm in g.groupby(["dataset", "method", "ratio"], sort=True):
        rows.append({"dataset": ds, "method": method, "ratio": f"{ratio:g} %",
                     "teacher (%)": _mean_std(gm["pl_teacher"], 100.0, 2),
                     "aligned (%)": _mean_std(gm["pl_aligned"], 100.0, 2),
                     "text-refined (%)": _mean_std(gm["pl_refined"], 100.0, 2),
                     "refined - aligned": _mean_std(gm["pl_refined"] - gm["pl_aligned"], 100.0, 2),
                     "pixel AUC teacher": _auc(gm["auc_teacher"]), "pixel AUC text map": _auc(gm["auc_map"]),
                     "flips right (%)": _reported(gm["flips_right"], 100.0, 1),
                     "refined at teacher area (%)": _reported(gm["pl_at_teacher_area"], 100.0, 2),
                     "best single candidate (%)": _reported(gm["pl_oracle"], 100.0, 2),
                     "several candidates (%)": _reported(gm["multi"], 100.0, 1),
                     "rank corr. text map": _reported(gm["rho_map"], 1.0, 3),
                     "rank corr. teacher": _reported(gm["rho_teacher"], 1.0, 3),
                     "runs (seeds)": _runs(gm["seed"])})
    return pd.DataFrame(rows).set_index(["dataset", "method", "ratio"])


def _reported(col, scale: float, digits: int) -> str:
    """'mean ± std' over the runs that report a value; '' when none does (runs from before it was reported)."""
    col = col.dropna()
    return _mean_std(col, scale, digits) if len(col) else ""


def _auc(col) -> str:
    """'mean ± std' of AUCs with 3 decimals over the runs that report one; '' when none does."""
    return _reported(col, 1.0, 3)


def folder_table(root, metrics=(("dice", 100.0, 2), ("iou", 100.0, 2), ("hd95", 1.0, 1))):
    """One row per sub-folder of ``root`` (its name is the row label), test metrics as 'mean ± std' over the
    ``metrics.json`` files below it (any depth; e.g. one per seed), the largest ``val_empty`` of any epoch of
    any of its runs (:func:`max_val_empty`; blank without histories), plus ``runs (seeds)``. For runs that the
    variant name alone does not tell apart (``--method-arg`` settings, runs of older defaults): the folder says
    what the row is. A stage's own test score that the experiment published beside the runs
    (``_stages/<kind>-<key>/metrics.json``: the static teacher alone, BCP's pre-trained network) is not averaged
    into its folder's row; it gets a row of its own, ``<folder>: <variant> (stage)``.
    ``python -m busnb.results --by-folder DIR`` prints it."""
    import pandas as pd

    rows = []
    for name, df, stage in _folder_rows(root):
        groups = [(name, df[~stage])] + [(f"{name}: {v} (stage)", g)
                                         for v, g in df[stage].groupby("method", sort=True)]
        for label, g in groups:
            if g.empty:
                continue
            row = {"row": label}
            for m, scale, digits in metrics:
                row[COLUMN_NAMES.get(m, m)] = _mean_std(g[m], scale, digits)
            worst = g["val_empty_max"].max()
            row["max val_empty"] = "" if pd.isna(worst) else f"{worst:.2f}"
            row["runs (seeds)"] = _runs(g["seed"])
            rows.append(row)
    return pd.DataFrame(rows).set_index("row") if rows else pd.DataFrame()


def _folder_rows(root):
    """(sub-folder name, :func:`collect` of it, mask of the runs that are published stage scores) for each
    sub-folder of ``root`` that holds runs, in name order: the rows of :func:`folder_table` and
    :func:`paired_table`."""
    for sub in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        df = collect(sub)
        if not df.empty:
            yield sub.name, df, df["path"].map(lambda p: _published_stage(Path(p), Path(root)))


def _published_stage(run: Path, root: Path) -> bool:
    """Whether the run folder ``run`` below ``root`` is a stage's score the experiment published beside the runs
    (``_stages/<kind>-<key>/``, :func:`busnb.experiment._publish_stage`), not a run of the row."""
    return PUBLISHED_STAGES in run.relative_to(root).parts


def _per_image(run: Path):
    """A run's ``test_per_image.csv`` with the size columns :func:`size_table` needs, or a clear error."""
    import pandas as pd

    f = run / "test_per_image.csv"
    if not f.exists():
        raise FileNotFoundError(f"{f}: missing. Fix: copy the run's test_per_image.csv next to its metrics.json "
                                "(training writes it into the run folder).")
    t = pd.read_csv(f)
    missing = {"gt_frac", "pred_frac", "dice"} - set(t.columns)
    if missing:
        raise ValueError(f"{f}: no column {sorted(missing)} (written by busnb before the size columns). Fix: "
                         "rescore the run's checkpoint, `busnb evaluate <run folder> --dataset <name> --part test "
                         "--split-seed <seed>`, and use the per_image.csv it writes.")
    return t


def size_table(root, ref: str = "supervised", n_bins: int = 4):
    """Test Dice by **true lesion size**, one row per sub-folder of ``root`` (as :func:`folder_table`), one column per
    size bin: where a method gains or loses against ``ref`` (a sub-folder's name).

    Per run (one per seed below a sub-folder, each with its ``test_per_image.csv``): the test images with a lesion
    are cut into ``n_bins`` equal-count bins of their true foreground fraction (``gt_frac``; the bins of a split
    seed are the same for every row, since every row scores the same test images); per bin the mean Dice and
    the median predicted / true area (``pred_frac / gt_frac``: above 1 over-segments, 0 is an empty prediction).
    A cell is ``Dice (Δ vs ref) · area×``, each the mean over seeds; Δ is paired by seed (only seeds both rows
    have). The reference row comes first, the others in name order. The header gives the bin's range of lesion
    size in % of the image (mean over seeds of its edges). A ``ref`` that is no sub-folder is an error. Stage
    scores published beside the runs (``_stages/``) are left out.
    Reporting only: the test masks define the bins and are never used to fit anything.
    ``python -m busnb.results --by-size DIR [--ref ROW] [--bins N]`` prints it."""
    import numpy as np
    import pandas as pd

    per = {}  # row -> {seed: DataFrame with a 'bin' column}
    edges = []
    for sub in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        for m in sorted(sub.rglob("metrics.json")):
            if _published_stage(m.parent, Path(root)):  # a stage's own score, not a run of this row
                continue
            seed = json.loads(m.read_text()).get("seed")
            t = _per_image(m.parent)
            t = t[t["gt_frac"] > 0].copy()
            q = np.quantile(t["gt_frac"], np.linspace(0, 1, n_bins + 1))
            t["bin"] = np.clip(np.searchsorted(q, t["gt_frac"], side="right") - 1, 0, n_bins - 1)
            t["area_ratio"] = t["pred_frac"] / t["gt_frac"]
            per.setdefault(sub.name, {})[seed] = t
            edges.append(q)
    if not per:
        return pd.DataFrame()
    if ref not in per:
        raise ValueError(f"size_table: no row {ref!r} under {root} to compare with (rows: {sorted(per)}). Fix: pass "
                         "--ref with one of them.")
    e = 100 * np.mean(edges, axis=0)
    names = [f"{'smallest ' if b == 0 else 'largest ' if b == n_bins - 1 else ''}{e[b]:.1f}–{e[b + 1]:.1f} %"
             for b in range(n_bins)]

    def per_bin(seeds: dict, column: str, how: str):  # bins x seeds
        return pd.DataFrame({s: t.groupby("bin")[column].agg(how).reindex(range(n_bins)) for s, t in seeds.items()})

    dice = {n: per_bin(seeds, "dice", "mean") for n, seeds in per.items()}
    area = {n: per_bin(seeds, "area_ratio", "median") for n, seeds in per.items()}
    rows = []
    for name in sorted(per, key=lambda n: n != ref):  # the reference row first
        d, a = dice[name], area[name]
        row = {"row": name}
        paired = [s for s in d.columns if s in dice[ref].columns] if name != ref else []
        delta = (d[paired] - dice[ref][paired]).mean(axis=1) if paired else None
        for b, col in enumerate(names):
            cell = f"{100 * d.loc[b].mean():.1f}"
            if delta is not None:
                cell += f" ({100 * delta.loc[b]:+.1f})"
            row[col] = cell + f" · {a.loc[b].mean():.2f}×"
        row["runs (seeds)"] = _runs(pd.Series(list(d.columns)))
        rows.append(row)
    return pd.DataFrame(rows).set_index("row")


def paired_table(root, ref: str = "supervised", pairs=None, metric: str = "dice", scale: float = 100.0,
                 digits: int = 2):
    """Paired differences by seed between sub-folders of ``root`` (as :func:`folder_table`): for each row, its test
    ``metric`` minus the reference row's at the **same seed** (same split, same training seed), over the seeds both
    have. With 2.5 % labels the seed-to-seed spread of one method (split and initialisation) is often larger than the
    gap between two methods, so a claim "A adds x over B" is read from these paired differences, not from two
    means ± std side by side.

    ``pairs``: ``[(row, reference), ...]`` (e.g. ``("supervised-ssl", "supervised")``); default: every other
    sub-folder against ``ref``. Columns: the mean ± std of the differences, the differences per seed, at how many
    seeds the row is above its reference, and the paired seeds. A row or reference that is no sub-folder, or a
    pair without a common seed, is an error. Stage scores published beside the runs (``_stages/``) are left out.
    ``python -m busnb.results --paired DIR [--ref ROW] [ROW:REFERENCE ...]`` prints it."""
    import pandas as pd

    per = {name: _by_seed(Path(root) / name, df[~stage], metric) for name, df, stage in _folder_rows(root)}
    if pairs is None:
        pairs = [(name, ref) for name in sorted(per) if name != ref]
    rows = []
    for name, against in pairs:
        for n in (name, against):
            if n not in per:
                raise ValueError(f"paired_table: no row {n!r} with runs under {root} (rows: {sorted(per)}). Fix: "
                                 "name sub-folders that hold metrics.json files.")
        seeds = sorted(set(per[name]) & set(per[against]))
        if not seeds:
            raise ValueError(f"paired_table: {name!r} (seeds {sorted(per[name])}) and {against!r} (seeds "
                             f"{sorted(per[against])}) have no seed in common to pair.")
        d = [per[name][s] - per[against][s] for s in seeds]
        rows.append({"row": name, "reference": against,
                     f"Δ {COLUMN_NAMES.get(metric, metric)}": _mean_std(d, scale, digits),
                     "per seed": " / ".join(f"{scale * x:+.{digits}f}" for x in d),
                     "above": f"{sum(x > 0 for x in d)} of {len(d)}", "seeds": ", ".join(map(str, seeds))})
    return pd.DataFrame(rows).set_index("row") if rows else pd.DataFrame()


def table_caption(name: str) -> str:
    """What a :func:`report_tables` table holds, in words."""
    if name == "pseudo_labels":
        return ("Dice of the pseudo-labels on the unlabeled pool (final teacher: raw, base-rate aligned, text-refined; "
                "reported, never used for training or selection), mean ± std over seeds; how well the teacher and "
                "the text map rank pixels (AUC) and images (rank correlation of a per-image confidence with the "
                "labels' Dice), and the ceiling of the text-guided selection (best single candidate per image)")
    if name.startswith("compare_"):
        ds, r = name[len("compare_"):].rsplit("_", 1)
        return f"{ds}, {r} of train labeled: test metrics per method (mean ± std over seeds)"
    kind, metric = name.split("_", 1)
    what = "ablation rows" if kind == "ablation" else "per labeled ratio"
    return f"test {metric} (%), {what}: mean ± std over seeds (n = trained models)"


def write_results(run_dir, profile: str, df, tables: dict) -> tuple[Path, Path]:
    """``results.json`` (every run's row and every table) and ``results.md`` (the tables) in ``run_dir``;
    returns their paths."""
    from .atomic import write_json

    run_dir = Path(run_dir)
    runs = df.drop(columns=["path"]).to_dict("records") if not df.empty else []
    write_json(run_dir / "results.json", {"profile": profile, "runs": runs,
                                          "tables": {n: t.reset_index().to_dict("records") for n, t in tables.items()}})
    md = run_dir / "results.md"
    md.write_text("\n\n".join(f"### {n}\n\n" + t.to_markdown(disable_numparse=True) for n, t in tables.items()) or "no runs\n")
    return run_dir / "results.json", md


def per_image_summary(per_image):
    """The test metrics of one trained model, one row each (Dice and IoU in %, HD95 and ASD in px at the images'
    original resolution), as mean ± std, min and max over the test images. ``per_image``: the run's
    ``test_per_image.csv`` (path or DataFrame)."""
    import pandas as pd

    t = pd.read_csv(per_image) if not isinstance(per_image, pd.DataFrame) else per_image
    rows = {}
    for m, scale, unit, digits in (("dice", 100, "%", 1), ("iou", 100, "%", 1), ("hd95", 1, "px", 1), ("asd", 1, "px", 1)):
        v = t[m].astype(float) * scale
        rows[f"{ {'dice': 'Dice', 'iou': 'IoU'}.get(m, m.upper())} ({unit})"] = {
            "mean ± std": f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}" if len(v) > 1 else f"{v.mean():.{digits}f}",
            "min": f"{v.min():.{digits}f}", "max": f"{v.max():.{digits}f}"}
    out = pd.DataFrame(rows).T
    out.columns.name = f"{len(t)} test images"
    return out


def all_lesion_dice(masks) -> float:
    """Mean Dice of the trivial prediction 'every pixel is lesion' over ground-truth ``masks`` (a reference:
    a model must beat it to have learned anything about where the lesion is)."""
    import numpy as np

    d = [2 * m.sum() / (m.sum() + m.size) for m in (np.asarray(x, dtype=bool) for x in masks)]
    return float(np.mean(d)) if d else float("nan")


def predictions_by_variant(df, profile, n_images: int = 4):
    """(image, ground truth, prediction) for the same test images under every variant of the first 2D
    dataset / ratio / seed in ``df``, with titles; for the qualitative figure (empty lists without 2D runs)."""
    import torch

    from .data import DATASETS, load_pair
    from .experiment import net_factory, prepare
    from .metrics import dice_iou
    from .train import predict_prob

    df = df[df["dataset"].isin(DATASETS)] if len(df) else df  # 2D runs: a 3D run (09) has no image to show here
    if df.empty:
        return [], []
    first = df.iloc[0]
    same = df[(df["dataset"] == first["dataset"]) & (df["ratio"] == first["ratio"]) & (df["seed"] == first["seed"])]
    parts = prepare(profile, first["dataset"], first["ratio"], int(first["seed"]), validate=False)  # checked when trained
    picks = parts["test"][:: max(1, len(parts["test"]) // n_images)][:n_images]
    pairs = [load_pair(s) for s in picks]
    rows, titles = [], []
    for _, r in same.iterrows():
        ckpt = Path(r["path"]) / "best.pt"
        if not ckpt.is_file():  # a stage's published row: its network lives in the stage cache
            ckpt = Path(json.loads((Path(r["path"]) / "metrics.json").read_text()).get("stage_dir", "")) / "best.pt"
            if not ckpt.is_file():
                print(f"{r['method']}: no network at {r['path']} (stage cache cleared?); not shown")
                continue
        net = net_factory(profile, init=False)()
        net.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=False)["net"])
        for s, (im, gt), pr in zip(picks, pairs, predict_prob(net, [p[0] for p in pairs], profile.image_size)):
            rows.append((im, gt, pr > 0.5))
            titles.append(f"{r['method']}\n{s.id} · Dice {100 * dice_iou(pr > 0.5, gt)[0]:.0f} %")
    return rows, titles


def _by_seed(folder: Path, df, metric: str) -> dict[int, float]:
    """{seed: metric} of one row's runs (``df``: :func:`collect` of ``folder``, published stage scores left out);
    two runs of one seed in a row are an error naming them."""
    twice = sorted({int(x) for x in df["seed"][df["seed"].duplicated()]})
    if twice:
        raise ValueError(f"{folder} holds more than one run of seed {twice[0]} "
                         f"({sorted(df['path'][df['seed'] == twice[0]])}). Fix: one run per seed in a row's "
                         "folder (put other ratios or settings in their own folders).")
    return {int(s): float(v) for s, v in zip(df["seed"], df[metric])}


GRID_ROWS = ("supervised", "mean_teacher", "cps", "bcp", "dual_uncertainty", "+static", "dual_teacher", "dusss")


def grid_columns(dirs: dict, starts: dict | None = None) -> list[tuple[str, Path, str]]:
    """:func:`grid_table`'s columns from ``{ratio label: results folder}`` × ``{start label: folder-name suffix}``
    (e.g. ``{"scratch": "", "SimCLR+restore": "-simclr+restore"}``; None: one start, no suffix), labelled
    "<ratio>, <start>" in that order."""
    starts = starts or {"": ""}
    return [(", ".join(x for x in (lab, s_lab) if x), Path(root), sfx)
            for lab, root in dirs.items() for s_lab, sfx in starts.items()]


def grid_table(columns, rows=None, ref: str = "supervised", metric: str = "dice", scale: float = 100.0,
               digits: int = 2):
    """Rows × settings, one cell per (row, setting): the README's overview of many result folders at once.

    ``columns``: ``[(label, root, suffix), ...]``; the cell of row ``r`` in that column is the sub-folder
    ``root / (r + suffix)`` (e.g. root ``…/d64e45-r10-weak``, suffix ``-simclr+restore``), as in
    :func:`folder_table`. A cell is the test ``metric`` as 'mean ± std' over its seeds and, for every row but
    ``ref``, the paired difference to ``ref`` + suffix in the same root (:func:`paired_table`'s Δ: mean over the
    common seeds) and at how many of them the row is above, e.g. '60.47 ± 2.65 (+1.31, 3/3)'. A missing folder is
    '—'. ``rows``: default :data:`GRID_ROWS`, those with a folder in some column; rows named explicitly must each
    have one. A column root that is no folder is an error."""
    import pandas as pd

    explicit = rows is not None
    rows = list(rows if explicit else GRID_ROWS)
    cache = {}

    def seeds(folder: Path):
        if folder not in cache:
            df = collect(folder) if folder.is_dir() else pd.DataFrame()
            if not df.empty:
                df = df[~df["path"].map(lambda p: _published_stage(Path(p), folder))]
            cache[folder] = _by_seed(folder, df, metric) if not df.empty else None
        return cache[folder]

    for label, root, _ in columns:
        if not Path(root).is_dir():
            raise ValueError(f"grid_table: column {label!r}: {root} is no folder. Fix: give LABEL=DIR with a "
                             "results folder that holds one sub-folder per row.")
    out = {}
    for r in rows:
        cells = {}
        for label, root, suffix in columns:
            mine = seeds(Path(root) / f"{r}{suffix}")
            if not mine:
                cells[label] = "—"
                continue
            cell = _mean_std(list(mine.values()), scale, digits)
            base = seeds(Path(root) / f"{ref}{suffix}") if r != ref else None
            common = sorted(set(mine) & set(base or {}))
            if common:
                d = [mine[s] - base[s] for s in common]
                cell += f" ({scale * sum(d) / len(d):+.{digits}f}, {sum(x > 0 for x in d)}/{len(d)})"
            cells[label] = cell
        if any(v != "—" for v in cells.values()):
            out[r] = cells
        elif explicit:
            raise ValueError(f"grid_table: row {r!r} has no folder {r}<suffix> in any column "
                             f"({', '.join(str(Path(root) / (r + sfx)) for _, root, sfx in columns)}). Fix: name "
                             "rows by their folders' names without the column's suffix.")
    return pd.DataFrame.from_dict(out, orient="index", columns=[c[0] for c in columns])


def markdown_summary(run_dir) -> str:
    """Dice / IoU (%) and HD95 (px) tables, mean ± std over seeds, of every metrics.json under ``run_dir``
    (what README tables are built from: ``python -m busnb.results results/<folder>``), and the pseudo-label table
    (:func:`pseudo_label_table`) when a run reports one."""
    df = collect(run_dir)
    if df.empty:
        return f"no metrics.json under {run_dir}\n"
    out = []
    for m, scale, unit in (("dice", 100.0, "%"), ("iou", 100.0, "%"), ("hd95", 1.0, "px")):
        out.append(f"test {m} ({unit}), mean ± std over seeds (n runs)\n\n" + ablation_table(df, metric=m, scale=scale).to_markdown())
    if df["pl_teacher"].notna().any():
        out.append("pseudo-labels of the final teacher on the unlabeled pool, scored against its masks (reporting "
                   "only; busnb.results.pseudo_label_table)\n\n"
                   + pseudo_label_table(df).to_markdown(disable_numparse=True))
    return "\n\n".join(out) + "\n"


# What ``pack`` keeps of a run folder: the small text files a README table is built from, and the logs.
PACKED = ("metrics.json", "history.json", "run.json", "test_per_image.csv", "pool_report.json", "sweep.json",
          "config.json", "inputs.json", "result.json")


def pack(src: str | Path, archive: str | Path) -> list[str]:
    """Write the small text files of every run below ``src`` (:data:`PACKED` and ``*.log``; never checkpoints,
    caches or data) into the gzipped tar ``archive``, paths relative to ``src``, atomically; returns their paths.

    For a remote GPU machine that sends back only a few files (``make device-sweep``): one archive carries a whole
    sweep, and ``tar xzf`` in ``results/<folder>`` gives the layout ``python -m busnb.results`` reads."""
    import tarfile

    from .atomic import atomic_path

    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"pack: {src} is not a folder. Fix: pass the sweep or run folder (busnb sweep --out).")
    files = sorted(p for p in src.rglob("*") if p.is_file() and (p.name in PACKED or p.suffix == ".log"))
    if not files:
        raise FileNotFoundError(f"pack: no run files ({', '.join(PACKED[:3])}, ...) below {src}. "
                                "Fix: pass the folder a sweep or run wrote.")
    names = [str(p.relative_to(src)) for p in files]
    with atomic_path(archive) as tmp:
        with tarfile.open(tmp, "w:gz") as tar:
            for p, name in zip(files, names):
                tar.add(p, arcname=name, recursive=False)
    return names


if __name__ == "__main__":
    import sys

    args = sys.argv[1:]
    if args[:1] == ["--pack"]:
        if len(args) != 3:
            sys.exit("--pack: Fix: python -m busnb.results --pack RUN_OR_SWEEP_DIR ARCHIVE.tar.gz")
        try:
            names = pack(args[1], args[2])
        except FileNotFoundError as e:
            sys.exit(f"error: {e}")
        print(f"packed {len(names)} files of {args[1]} into {args[2]}")
    elif args[:1] == ["--by-folder"]:
        t = folder_table(args[1] if len(args) > 1 else "results")
        print(t.to_markdown(disable_numparse=True) if not t.empty else "no metrics.json below any sub-folder")
    elif args[:1] == ["--by-size"]:
        ref = args[args.index("--ref") + 1] if "--ref" in args else "supervised"
        bins = int(args[args.index("--bins") + 1]) if "--bins" in args else 4
        t = size_table(args[1] if len(args) > 1 else "results", ref=ref, n_bins=bins)
        print(t.to_markdown(disable_numparse=True) if not t.empty else "no metrics.json below any sub-folder")
    elif args[:1] == ["--paired"]:
        usage = "Fix: python -m busnb.results --paired DIR [--ref ROW] [ROW:REFERENCE ...]"
        if "--ref" in args and args.index("--ref") + 1 >= len(args):
            sys.exit(f"--paired: --ref needs a row name. {usage}")
        ref = args[args.index("--ref") + 1] if "--ref" in args else "supervised"
        rest = [a for a in args[2:] if a not in ("--ref", ref)]
        bad = [a for a in rest if ":" not in a]
        if bad:
            sys.exit(f"--paired: {bad[0]!r} is not ROW:REFERENCE. {usage}, e.g. supervised-ssl:supervised")
        pairs = [tuple(a.split(":", 1)) for a in rest] or None
        t = paired_table(args[1] if len(args) > 1 else "results", ref=ref, pairs=pairs)
        print(t.to_markdown(disable_numparse=True) if not t.empty else "no metrics.json below any sub-folder")
    elif args[:1] == ["--grid"]:
        usage = ("Fix: python -m busnb.results --grid LABEL=DIR [LABEL=DIR ...] [--starts LABEL=SUFFIX ...] "
                 "[--rows ROW ...] [--ref ROW]")
        opts, key = {"--grid": [], "--starts": [], "--rows": [], "--ref": []}, "--grid"
        for a in args:
            if a in opts:
                key = a
            else:
                opts[key].append(a)
        bad = [a for a in opts["--grid"] + opts["--starts"] if "=" not in a]
        if not opts["--grid"] or bad or len(opts["--ref"]) > 1:
            sys.exit(f"--grid: {bad[0]!r} is not LABEL=VALUE. {usage}" if bad else f"--grid: bad arguments. {usage}")
        cols = grid_columns(dict(a.split("=", 1) for a in opts["--grid"]),
                            dict(a.split("=", 1) for a in opts["--starts"]) or None)
        try:
            t = grid_table(cols, rows=opts["--rows"] or None, ref=(opts["--ref"] or ["supervised"])[0])
        except ValueError as e:
            sys.exit(f"error: {e}")
        print(t.to_markdown(disable_numparse=True) if not t.empty else "no row has runs in any column")
    else:
        print(markdown_summary(args[0] if args else "results"))
