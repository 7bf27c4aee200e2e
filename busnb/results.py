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
