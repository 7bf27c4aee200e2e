"""``busnb pseudo-label``: generate APPG pseudo-labels for a split into the cache and print their quality."""
from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("pseudo-label", help="APPG pseudo-labels for a split (cached, resumable)")
    p.add_argument("--dataset", default="phantom")
    p.add_argument("--root")
    p.add_argument("--backend", default="appearance", choices=["appearance", "gdino_sam"])
    p.add_argument("--prompt", default=None, help="phrases separated by '.', default: the paper's three")
    p.add_argument("--part", default="unlabeled", help="unlabeled | train | val | all")
    p.add_argument("--ratio", type=float, default=2.5)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--min-fg", type=float, default=0.01)
    p.add_argument("--box-policy", default="top1", choices=["top1", "union"])
    p.add_argument("--box-threshold", type=float,
                   help="drop boxes scoring below this, in [0, 1] (appearance: its calibrated score; default: keep all)")
    p.add_argument("--gdino", help="Grounding DINO hub id or local folder")
    p.add_argument("--sam", help="segmenter: SAM / SAM 2 hub id or local folder, segment-anything .pth, or "
                   "MedSAM's medsam_vit_b.pth")
    p.add_argument("--sam-kind", choices=["auto", "sam", "sam2", "medsam"], default="auto",
                   help="how to run --sam (auto: from its name or config.json)")
    p.add_argument("--limit", type=int, help="label at most this many images not yet in the cache (a quick look; the report covers every cached "
                   "image of the part asked for)")
    p.add_argument("--workers", type=int, default=1, help="processes for CPU backends (0: one per core)")
    p.add_argument("--fit-on", default="none", choices=["none", "labeled"],
                   help="appearance backend: 'none' keeps the mask-free defaults; 'labeled' fits the score weights "
                        "on the labeled images of --ratio / --split-seed only (never val, test or the unlabeled pool)")
    p.set_defaults(fn=run)


def run(a) -> int:
    from .. import splits as S
    from ..prompts import PAPER_PROMPTS
    from ..data import load_dataset
    from .pipeline import PseudoLabelConfig, area_filter_note, area_filter_report, area_filter_table, dataset_cache_id, backend_from_name, generate, quality_summary, \
        quality_table

    samples = load_dataset(a.dataset, root=a.root)
    name = S.split_name(a.dataset, a.root)
    if a.part == "all":
        todo = samples
    else:
        sp = S.load_or_make(name, samples, seed=a.split_seed)
        parts = S.subsets(samples, sp, a.ratio)
        todo = parts[a.part] if a.part in parts else [s for s in samples if s.id in set(sp[a.part])]
    kw = {k: v for k, v in {"gdino": a.gdino, "sam": a.sam}.items() if v}
    if a.backend == "gdino_sam" and a.sam_kind != "auto":
        kw["sam_kind"] = a.sam_kind
    backend = backend_from_name(a.backend, **kw)
    if a.fit_on == "labeled":
        if a.backend != "appearance":
            raise SystemExit("--fit-on labeled fits the appearance backend's weights; Fix: use --backend appearance.")
        from .tune import fit_on_labeled

        sp = S.load_or_make(name, samples, seed=a.split_seed)
        backend, rep = fit_on_labeled(backend, samples, sp, a.ratio, phrase=a.prompt or ". ".join(PAPER_PROMPTS))
        print(f"fitted on {rep['n_images']} labeled images ({a.ratio} %, split seed {a.split_seed}): top-1 Dice "
              f"{rep['top1_dice_before']:.3f} -> {rep['top1_dice_after']:.3f}; weights {rep['weights']}")
        top = rep["oracle_top"]
        print(f"ceiling on the same images: the best of each image's top 5 / top 10 / all candidates "
              f"{top[5]:.3f} / {top[10]:.3f} / {rep['oracle_dice']:.3f} (a perfect ranking of the candidates)")
        cv = rep["cv"]
        if cv is not None:
            print(f"out of sample ({cv['folds']}-fold cross-validation on the same labeled images): top-1 Dice "
                  f"{cv['defaults']:.3f} with the defaults, {cv['fitted']:.3f} with weights fitted without the image; "
                  + ("the fitted weights are used" if rep["adopted"] else
                     "fitting does not generalise here, so the defaults are kept"))
    cfg = PseudoLabelConfig(**{k: v for k, v in {"prompt": a.prompt, "min_fg": a.min_fg, "box_policy": a.box_policy,
                                                 "box_threshold": a.box_threshold}.items() if v is not None})
    labels = generate(todo, backend, cfg, dataset_cache_id(name, samples), limit=a.limit, workers=a.workers)
    df = quality_table(labels, todo)  # the images asked for, not every record the cache folder holds
    print(quality_summary(df).round(3).to_string())
    report = area_filter_report(df, cfg.min_fg)
    print(area_filter_table(report, cfg.min_fg).to_string())
    print(area_filter_note(report, cfg.min_fg))
    print(f"cache: {labels.folder}")
    return 0
