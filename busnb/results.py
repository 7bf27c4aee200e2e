"""Collect ``metrics.json`` files of a run into tables (mean +- std over seeds)."""
from __future__ import annotations

import json
from pathlib import Path


def collect(run_dir: str | Path):
    """One row per trained model found under ``run_dir`` (any depth)."""
    import pandas as pd

    rows = []
    for p in sorted(Path(run_dir).rglob("metrics.json")):
        m = json.loads(p.read_text())
        if "test" not in m:
            continue
        variant = m.get("variant") or m["method"]
        rows.append({"dataset": m["dataset"], "method": variant, "ratio": m["ratio"], "seed": m["seed"],
                     "profile": m["profile"], "val_dice": m["best_val_dice"],
                     **{k: m["test"][k] for k in ("dice", "iou", "hd95", "asd", "n_empty_pred")}, "path": str(p.parent)})
    return pd.DataFrame(rows)


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


def predictions_by_variant(df, profile, n_images: int = 4):
    """(image, ground truth, prediction) for the same test images under every variant of the first
    dataset / ratio / seed in ``df``, with titles; for the qualitative figure."""
    import torch

    from .data import load_pair
    from .experiment import net_factory, prepare
    from .train import predict_prob

    first = df.iloc[0]
    same = df[(df["dataset"] == first["dataset"]) & (df["ratio"] == first["ratio"]) & (df["seed"] == first["seed"])]
    parts = prepare(profile, first["dataset"], first["ratio"], int(first["seed"]))
    picks = parts["test"][:: max(1, len(parts["test"]) // n_images)][:n_images]
    pairs = [load_pair(s) for s in picks]
    rows, titles = [], []
    for _, r in same.iterrows():
        net = net_factory(profile)()
        net.load_state_dict(torch.load(Path(r["path"]) / "best.pt", map_location="cpu", weights_only=False)["net"])
        for s, (im, gt), pr in zip(picks, pairs, predict_prob(net, [p[0] for p in pairs], profile.image_size)):
            rows.append((im, gt, pr > 0.5))
            titles.append(f"{r['method']} · {s.id}")
    return rows, titles
