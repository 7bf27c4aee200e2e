"""Apply a trained run to new images (``busnb predict``) and score it on any dataset (``busnb evaluate``).

>>> df = predict_folder("runs/train-cpu/dual_teacher-busi-r2.5-s0", "my_images/", "my_predictions/")
>>> m = evaluate_run("runs/train-cpu/dual_teacher-busi-r2.5-s0", "busbra", part="all")
>>> cross_dataset_table(["runs/train-cpu"])          # trained-on x evaluated-on Dice

Images are fed exactly as the trainer feeds them (``busnb.train.predict_prob``): grayscale, resized to the
profile's ``image_size``, divided by 255; the probability map is upsampled bilinearly to the image's original
size, and everything written or scored is at that size. Nothing here trains or changes a checkpoint.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from .atomic import atomic_path, write_json
from .data.io import IMAGE_SUFFIXES, DataError

PARTS = ("test", "val", "train", "all")
# files an OS or a file manager leaves in folders: skipped (printed and counted), never read
JUNK_NAMES = {".ds_store", "thumbs.db", "desktop.ini", ".gitkeep", ".gitignore"}
OUTLINE_RGB = (0, 230, 230)  # cyan: the prediction colour of busnb.show.show_grid


# -- loading a trained run ---------------------------------------------------------------------------------
def _resolve(run_or_checkpoint) -> tuple[Path, Path]:
    """(run folder, checkpoint file) from a run folder or a ``best.pt`` inside one."""
    p = Path(run_or_checkpoint)
    if p.is_dir():
        ckpt = p / "best.pt"
        if not ckpt.is_file():
            raise FileNotFoundError(f"{p}: no best.pt in this folder. Fix: pass a finished training run "
                                    "(the folder `busnb train` printed), or the checkpoint file itself.")
        return p, ckpt
    if p.is_file():
        return p.parent, p
    raise FileNotFoundError(f"{p}: no such run folder or checkpoint.")


def _run_info(run_dir: Path) -> dict:
    """What the run says about itself: ``run.json`` (its identity: profile, variant, dataset, split, ...)
    and ``metrics.json`` (its test result); flattened, run.json's identity winning where both say something."""
    info: dict = {}
    f = run_dir / "metrics.json"
    if f.is_file():
        info.update(json.loads(f.read_text()))
    f = run_dir / "run.json"
    if f.is_file():
        meta = json.loads(f.read_text())
        ident = meta.pop("identity", {}) if isinstance(meta.get("identity"), dict) else {}
        info.update({k: v for k, v in meta.items() if k not in info or v is not None})
        info.update(ident)
    return info


def _profile_from(info: dict, run_dir: Path):
    from .config import get_profile
    from .experiment import profile_from_dict

    prof = info.get("profile")
    if isinstance(prof, dict):
        return profile_from_dict(prof)
    if isinstance(prof, str):
        return get_profile(prof)
    raise FileNotFoundError(f"{run_dir}: neither run.json nor metrics.json names the profile. Fix: pass the "
                            "folder of a finished `busnb train` run (it holds best.pt, run.json / metrics.json).")


def _arch_from_state(state: dict, prof):
    """Encoder and decoder widths read off a state dict (older runs recorded only the profile's name)."""
    from dataclasses import replace

    dec = []
    i = 0
    while f"net.decoder.blocks.{i}.conv1.0.weight" in state:
        dec.append(int(state[f"net.decoder.blocks.{i}.conv1.0.weight"].shape[0]))
        i += 1
    blocks = [sum(1 for k in state if k.startswith(f"net.encoder.layer{j}.") and k.endswith(".conv1.weight"))
              for j in range(1, 5)]
    bottleneck = any(k.startswith("net.encoder.layer1.0.conv3.") for k in state)
    enc = {(2, 2, 2, 2, False): "resnet18", (3, 4, 6, 3, False): "resnet34",
           (3, 4, 6, 3, True): "resnet50", (3, 4, 23, 3, True): "resnet101"}.get((*blocks, bottleneck))
    over = {}
    if dec and tuple(dec) != tuple(prof.decoder_channels):
        over["decoder_channels"] = tuple(dec)
    if enc and prof.encoder.startswith("resnet") and enc != prof.encoder:
        over["encoder"] = enc
    return replace(prof, **over) if over else prof


def _state_of(ckpt: Path) -> dict:
    import torch

    st = torch.load(ckpt, map_location="cpu", weights_only=False)
    if isinstance(st, dict) and "net" in st:
        return st["net"]
    if isinstance(st, dict) and "method" in st:
        raise ValueError(f"{ckpt}: this is a training state (last.pt), not a network. Fix: pass best.pt.")
    return st


def load_model(run_or_checkpoint, device: str = "auto"):
    """``(net, profile, run_dir, checkpoint)``: the selected network of a run, in eval mode on ``device``.

    Uses ``busnb.experiment.load_net`` (rebuilds from ``run.json``); older runs without ``run.json`` are
    rebuilt from ``metrics.json``'s profile name and the checkpoint's own shapes."""
    from .experiment import load_net
    from .models import build_model, pick_device

    run_dir, ckpt = _resolve(run_or_checkpoint)
    dev = pick_device(device)
    if not (run_dir / "metrics.json").is_file():
        print(f"note: {run_dir} has no metrics.json (training unfinished or interrupted?): using {ckpt.name}, "
              "the best validation epoch so far")
    net = prof = None
    if (run_dir / "run.json").is_file():
        net, prof = load_net(run_dir, device="cpu")
        if ckpt.resolve() != (run_dir / "best.pt").resolve():
            net.load_state_dict(_state_of(ckpt))
    else:
        state = _state_of(ckpt)
        prof = _arch_from_state(state, _profile_from(_run_info(run_dir), run_dir))
        net = build_model(prof.encoder, None, prof.decoder_channels)
        try:
            net.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(f"{ckpt}: does not fit a '{prof.encoder}' U-Net with decoder {prof.decoder_channels} "
                             f"(profile '{prof.name}' of {run_dir}). Fix: pass the run folder this checkpoint "
                             f"was trained in. ({str(e).splitlines()[0]})") from e
    return net.to(dev).eval(), prof, run_dir, ckpt


# -- predict -----------------------------------------------------------------------------------------------
def _is_junk(p: Path) -> bool:
    return p.name.lower() in JUNK_NAMES or p.name.startswith("._")


def list_images(images) -> tuple[list[Path], list[Path]]:
    """``(image files, skipped files)`` of a folder, a file or a list of files.

    In a folder, files that are not images by their suffix (OS junk such as ``.DS_Store``, notes, spreadsheets,
    an earlier run's ``predictions.csv``) are skipped and returned as the second list, for the caller to print
    by name; sub-folders are not searched. A folder without images, or a file named explicitly (argument or
    list) that is not an image, raises ``DataError`` naming it."""
    if isinstance(images, (str, Path)):
        p = Path(images)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file())
            skipped = [f for f in files if _is_junk(f) or f.suffix.lower() not in IMAGE_SUFFIXES]
            files = [f for f in files if f not in skipped]
            if not files:
                subs = sorted(d.name for d in p.iterdir() if d.is_dir()
                              and any(f.suffix.lower() in IMAGE_SUFFIXES for f in d.iterdir() if f.is_file()))
                raise DataError(f"{p}: no images in this folder ({', '.join(IMAGE_SUFFIXES)})"
                                + (f"; skipped {len(skipped)} other file(s)" if skipped else "")
                                + (f"; sub-folders are not searched, and {', '.join(subs[:5])} hold images"
                                   if subs else "")
                                + ". Fix: pass the folder that holds the images"
                                + (f", e.g. {p / subs[0]}." if subs else "."))
        elif p.is_file():
            files, skipped = [p], []
        else:
            raise DataError(f"{p}: no such folder or file.")
    else:
        files, skipped = [Path(f) for f in images], []
        if not files:
            raise DataError("no images given (an empty list).")
    for f in files:
        if not f.is_file():
            raise DataError(f"{f}: file not found.")
        if f.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(f"{f}: not an image (suffix '{f.suffix}'; expected one of {', '.join(IMAGE_SUFFIXES)}). "
                            "Fix: pass an image file, or the folder that holds the images.")
    seen: dict[str, Path] = {}
    for f in files:
        if f.stem in seen:
            raise DataError(f"{f} and {seen[f.stem]}: same name, their outputs (<name>.png) would overwrite each "
                            "other. Fix: rename one of them.")
        seen[f.stem] = f
    return files, skipped


def check_readable(files, progress: bool = False) -> None:
    """Decode every image before any output is written, so that a bad file stops the command before it has
    changed anything; a ``DataError`` names every file that cannot be read."""
    from .data.io import UNREADABLE, decode
    from .progress import tqdm

    bad = []
    for f in tqdm(files, desc="check images", unit="img", disable=not progress or len(files) < 50):
        try:
            decode(f).close()
        except UNREADABLE as e:
            bad.append(f"{f} ({str(e).splitlines()[0] if str(e) else type(e).__name__})")
    if bad:
        shown = "\n  ".join(bad[:10]) + (f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise DataError(f"{len(bad)} file(s) cannot be read as images:\n  {shown}\nFix: re-export them, or move them "
                        "out of the folder. Nothing was written.")


OUTPUT_DIRS = ("masks", "prob", "overlays")


def _clear_previous(out: Path) -> int:
    """Remove the outputs an earlier ``predict`` wrote into ``out`` (the files its ``predictions.csv`` lists, then
    that table and ``predict.json``), so the folder never mixes two runs. Other files are left alone. Returns how
    many images' outputs were removed."""
    import pandas as pd

    table = out / "predictions.csv"
    if not table.is_file():
        return 0
    ids = pd.read_csv(table, usecols=["id"], dtype={"id": str})["id"].tolist()
    for i in ids:
        for d in OUTPUT_DIRS:
            (out / d / f"{i}.png").unlink(missing_ok=True)
    table.unlink()
    (out / "predict.json").unlink(missing_ok=True)
    return len(ids)


def _png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def outline(mask: np.ndarray, width: int | None = None) -> np.ndarray:
    """Boundary pixels of a binary mask, ``width`` px thick (default: ~0.4 % of the image side, at least 1)."""
    from scipy import ndimage

    m = np.asarray(mask, bool)
    width = width or max(1, round(min(m.shape) / 250))
    inner = ndimage.binary_erosion(m, structure=np.ones((3, 3), bool), iterations=width, border_value=0)
    return m & ~inner


def overlay(img: np.ndarray, mask: np.ndarray, color=OUTLINE_RGB) -> np.ndarray:
    """RGB uint8: the grayscale image with the mask's outline drawn in ``color``."""
    rgb = np.repeat(np.asarray(img, np.uint8)[..., None], 3, axis=2)
    rgb[outline(mask)] = color
    return rgb


def image_stats(prob: np.ndarray, threshold: float = 0.5) -> dict:
    """Per-image numbers of ``predictions.csv`` from a probability map at the image's size.

    * ``area_px`` / ``area_frac``: pixels with p > threshold, and their share of the image;
    * ``n_components``: connected lesion regions (8-connectivity);
    * ``mean_prob_in_mask``: mean p over the mask (NaN when the mask is empty);
    * ``confidence``: mean |2p - 1| over the whole image, 0 = every pixel at p = 0.5, 1 = every pixel at 0 or 1
      (the per-pixel confidence AURCL uses). It measures how decided the network is, not whether it is right.
    """
    from scipy import ndimage

    m = prob > threshold
    _, n = ndimage.label(m, structure=np.ones((3, 3), bool))
    area = int(m.sum())
    return {"area_px": area, "area_frac": area / m.size, "n_components": int(n),
            "mean_prob_in_mask": float(prob[m].mean()) if area else float("nan"),
            "confidence": float(np.abs(2 * prob - 1).mean())}


def predict_folder(run_or_checkpoint, images, out_dir, threshold: float = 0.5, batch: int = 16,
                   device: str = "auto", progress: bool = True):
    """Segment every image of a folder (or list) with a trained run; returns the ``predictions.csv`` table.

    ``run_or_checkpoint``: a trained run folder, or a ``best.pt`` inside one (its ``run.json`` says how to
    rebuild the network). ``images``: a folder, one file or a list; PNG / JPEG / BMP / TIFF, 8- or 16-bit
    grayscale, RGB or RGBA (read as grayscale by ``busnb.data.read_image``). Writes to ``out_dir``, each atomically:

    * ``masks/<stem>.png``: 0 / 255 at the image's original size;
    * ``prob/<stem>.png``: probability x 255 (8-bit);
    * ``overlays/<stem>.png``: the image with the predicted outline in cyan;
    * ``predictions.csv``: ``id, file, height, width`` and the numbers of :func:`image_stats`;
    * ``predict.json``: the run, checkpoint, threshold, device, counts.
    """
    import pandas as pd
    from .progress import tqdm

    from .data.io import read_image
    from .train import predict_prob

    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out}: is a file. Fix: name a folder (it is created if missing).")
    files, skipped = list_images(images)
    if skipped:
        names = ", ".join(f.name for f in skipped[:5]) + (f" (+{len(skipped) - 5} more)" if len(skipped) > 5 else "")
        print(f"skipped {len(skipped)} file(s) that are not images ({', '.join(IMAGE_SUFFIXES)}): {names}")
    check_readable(files, progress)
    net, prof, run_dir, ckpt = load_model(run_or_checkpoint, device)
    metrics = run_dir / "metrics.json"
    if metrics.is_file() and json.loads(metrics.read_text()).get("dataset") == "phantom":
        print(f"note: this model was trained on the phantom (profile '{prof.name}'): its masks mean something on "
              "phantom images only. For your own images, use a run trained on ultrasound data.")
    dev = next(net.parameters()).device
    n_old = _clear_previous(out)
    if n_old:
        print(f"{out}: replaced the outputs of an earlier predict ({n_old} image(s))")
    rows = []
    bar = tqdm(total=len(files), desc="predict", unit="img", disable=not progress)
    for i in range(0, len(files), batch):
        chunk = files[i: i + batch]
        imgs = [read_image(f) for f in chunk]
        probs = predict_prob(net, imgs, prof.image_size, device=dev, batch=batch)
        for f, img, p in zip(chunk, imgs, probs):
            p = np.clip(p, 0.0, 1.0)
            m = p > threshold
            _png(out / "masks" / f"{f.stem}.png", m.astype(np.uint8) * 255)
            _png(out / "prob" / f"{f.stem}.png", np.round(p * 255).astype(np.uint8))
            _png(out / "overlays" / f"{f.stem}.png", overlay(img, m))
            rows.append({"id": f.stem, "file": str(f), "height": img.shape[0], "width": img.shape[1],
                         **image_stats(p, threshold)})
            bar.update(1)
    bar.close()
    df = pd.DataFrame(rows)
    with atomic_path(out / "predictions.csv") as tmp:
        df.to_csv(tmp, index=False)
    write_json(out / "predict.json", {"run": str(run_dir.resolve()), "checkpoint": str(ckpt.resolve()),
                                      "profile": prof.name, "image_size": prof.image_size, "threshold": threshold,
                                      "device": str(dev), "n_images": len(rows), "n_skipped": len(skipped),
                                      "skipped": [str(f) for f in skipped]})
    df.attrs.update(out_dir=str(out), n_skipped=len(skipped))
    return df


# -- evaluate ----------------------------------------------------------------------------------------------
def _dataset_root(dataset: str, root, prof) -> Path | None:
    from .data import dataset_root
    from .data.phantom import default_phantom_dir

    if dataset == "phantom":
        return Path(root) if root is not None else Path(default_phantom_dir(prof.phantom))
    if dataset == "folder" and root is None:
        return None
    return dataset_root(dataset, root)


def eval_name(dataset: str, part: str, root=None, split_seed: int = 0) -> str:
    """``<dataset>-<part>`` (``folder-<root name>-<part>`` for a folder; ``-s<seed>`` for a split seed other than 0)."""
    label = f"{dataset}-{Path(root).name}" if dataset == "folder" and root is not None else dataset
    return f"{label}-{part}" + (f"-s{split_seed}" if split_seed and part != "all" else "")


def evaluate_run(run_dir, dataset: str, root=None, part: str = "test", split_seed: int = 0, out=None,
                 progress: bool = True, device: str = "auto", threshold: float = 0.5) -> dict:
    """Score a trained run on ``dataset`` (any of ``busnb.data.DATASETS``) at each image's original resolution.

    ``part``: ``test`` | ``val`` | ``train`` (of the dataset's split ``split_seed``, made and written like
    training makes it when missing) or ``all`` images. On the dataset the run was trained on, keep ``test``
    (``train`` / ``val`` were seen in training or selection and score optimistically); on **another** dataset
    the model never saw any image of it, so ``all`` is the natural choice (more images, no split needed).

    Writes ``<run_dir>/eval/<dataset>-<part>/per_image.csv`` and ``metrics.json`` (or into ``out``): the run,
    what it was trained on, the dataset and its root, the part, and ``summary`` (busnb.metrics.summarize).
    Never trains and never writes a checkpoint. Returns the metrics.json content.
    """
    from . import splits as S
    from .data import load_dataset
    from .metrics import summarize
    from .train import evaluate, save_table

    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    net, prof, run_dir, ckpt = load_model(run_dir, device)
    info = _run_info(run_dir)
    root_path = _dataset_root(dataset, root, prof)
    samples = load_dataset(dataset, root=root, phantom=prof.phantom)
    if part != "all":
        # the split training would use for this dataset copy (named as busnb.experiment.prepare names it)
        split_name = S.split_name(dataset, root, phantom=prof.phantom)
        splits = S.load_or_make(split_name, samples, seed=split_seed)
        by_id = {s.id: s for s in samples}
        samples = [by_id[i] for i in splits[part]]
    if not samples:
        raise DataError(f"{dataset} ({root_path}): part '{part}' holds no images.")
    rows = evaluate(net, samples, prof.image_size, progress=progress, threshold=threshold)
    dev = next(net.parameters()).device
    try:
        from .provenance import provenance

        prov = provenance(dev)
    except ImportError:  # older checkout
        prov = {"device": str(dev)}
    try:
        from .data.fingerprint import dataset_fingerprint

        fingerprint = dataset_fingerprint(samples)
    except ImportError:
        fingerprint = None
    dest = Path(out) if out is not None else run_dir / "eval" / eval_name(dataset, part, root, split_seed)
    save_table(rows, dest / "per_image.csv")
    trained = info.get("dataset")
    trained = trained.get("name") if isinstance(trained, dict) else trained
    same_data = (info.get("split") == S.split_name(dataset, root, phantom=prof.phantom) if info.get("split")
                 else trained == dataset)
    seen = None
    if same_data and (part != "test" or split_seed != info.get("seed", split_seed)):
        what = (f"its '{part}' images" if part != "test" else f"the test part of split seed {split_seed} (it was "
                f"trained on split seed {info.get('seed')})")
        seen = (f"the run was trained on this copy of {dataset}: {what} were partly or wholly seen in training or "
                "model selection, so these scores are optimistic; the test part of its own split is the honest one")
        print(f"note: {seen}")
    result = {"run": str(run_dir.resolve()), "checkpoint": str(ckpt.resolve()),
              "trained_on": {"dataset": trained, "method": info.get("variant") or info.get("method"),
                             "ratio": info.get("ratio"), "seed": info.get("seed"), "split": info.get("split"),
                             "root": info.get("root"), "profile": prof.name},
              "dataset": dataset, "root": str(root_path.resolve()) if root_path else None, "part": part,
              "seen_in_training": seen,
              "split_seed": split_seed if part != "all" else None, "n_images": len(samples),
              "fingerprint": fingerprint, "image_size": prof.image_size, "threshold": threshold,
              "resolution": "original", "device": str(dev), "provenance": prov, "summary": summarize(rows)}
    write_json(dest / "metrics.json", result)
    result["out"] = str(dest)
    return result


def finished_runs(folder) -> list[Path]:
    """Run folders directly under ``folder`` with a selected network (best.pt) and a test result."""
    return sorted(p.parent for p in Path(folder).glob("*/metrics.json") if (p.parent / "best.pt").is_file())


def default_model(folder, prefer: str = "dual_teacher") -> Path | None:
    """The run of ``folder`` that ``08_apply_model`` applies when it is given none: a finished run of the
    method ``prefer`` (the repo's method, the run notebooks 03-06 share), else the first finished run by name,
    else None (:func:`finished_runs`)."""
    runs = finished_runs(folder)
    return next((r for r in runs if r.name.startswith(f"{prefer}-")), runs[0] if runs else None)


def write_format_examples(samples, folder) -> Path:
    """Copies of six samples' images in the formats users bring (8-bit PNG, 16-bit PNG, RGB JPEG, another size)
    plus a ``.DS_Store`` that predict must skip: the demo input of ``08_apply_model``."""
    from PIL import Image

    from .data import read_image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    src = [read_image(s.image) for s in samples[:6]]
    if len(src) < 6:
        raise ValueError(f"write_format_examples needs 6 samples, got {len(src)}")
    Image.fromarray(src[0]).save(folder / "scan_a.png")                                        # 8-bit grayscale
    Image.fromarray(src[1].astype(np.uint16) * 257).save(folder / "scan_b_16bit.png")          # 16-bit PNG
    Image.fromarray(np.stack([src[2]] * 3, -1)).save(folder / "scan_c_rgb.jpg", quality=92)     # RGB JPEG
    Image.fromarray(src[3]).resize((224, 150), Image.BILINEAR).save(folder / "scan_d_wide.png")  # other size
    Image.fromarray(src[4]).save(folder / "scan_e.png")
    Image.fromarray(src[5]).save(folder / "scan_f.png")
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")                                        # skipped
    return folder


def cross_dataset_table(run_dirs, metric: str = "dice", scale: float = 100.0):
    """Trained-on x evaluated-on table of mean ``metric`` (Dice x 100 by default).

    ``run_dirs``: trained runs, or folders holding them (searched at any depth). Rows: (trained-on dataset,
    method, ratio, seed); columns: the ``eval/<dataset>-<part>/metrics.json`` folders written by
    :func:`evaluate_run`, plus the run's own test score (``<dataset>-test``) from training."""
    import pandas as pd

    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    runs: list[Path] = []
    for d in map(Path, run_dirs):
        found = [d] if (d / "metrics.json").is_file() else [p.parent for p in sorted(d.rglob("metrics.json"))
                                                              if p.parent.parent.name != "eval"]
        runs += [r for r in found if r not in runs]
    rows = []
    for r in runs:
        info = _run_info(r)
        if "test" not in info:  # not a finished training run
            continue
        ds = info["dataset"].get("name") if isinstance(info["dataset"], dict) else info["dataset"]
        key = {"trained on": ds, "method": info.get("variant") or info.get("method"), "ratio": info.get("ratio"),
               "seed": info.get("seed")}
        rows.append({**key, "evaluated on": f"{ds}-test", "value": info["test"][metric]})
        for m in sorted((r / "eval").glob("*/metrics.json")):
            e = json.loads(m.read_text())
            rows.append({**key, "evaluated on": m.parent.name, "value": e["summary"][metric]})
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows)
    df["value"] = df["value"] * scale
    t = df.pivot_table(index=["trained on", "method", "ratio", "seed"], columns="evaluated on", values="value",
                       aggfunc="mean")
    t.columns.name = f"{metric} x {scale:g}" if scale != 1 else metric
    return t


# -- command line ------------------------------------------------------------------------------------------
def cmd_predict(a) -> int:
    df = predict_folder(a.run, a.images, a.out, threshold=a.threshold, batch=a.batch, device=a.device)
    n = len(df)
    print(f"{n} image(s): lesion found in {int((df['area_px'] > 0).sum())}, median area "
          f"{100 * df['area_frac'].median():.1f} % of the image, mean confidence {df['confidence'].mean():.2f}")
    print(f"written to {a.out}: masks/, prob/, overlays/, predictions.csv")
    return 0


def cmd_evaluate(a) -> int:
    r = evaluate_run(a.run, a.dataset, root=a.root, part=a.part, split_seed=a.split_seed, device=a.device)
    s = r["summary"]
    print(f"{r['dataset']} {r['part']} ({s['n']} images): Dice {s['dice']:.4f} +- {s['dice_std']:.4f}, "
          f"IoU {s['iou']:.4f}, HD95 {s['hd95']:.1f} px, ASD {s['asd']:.1f} px, empty predictions {s['n_empty_pred']}")
    print(f"written to {r['out']}: per_image.csv, metrics.json")
    return 0


def add_parsers(sub) -> None:
    """Add ``predict`` and ``evaluate`` to the ``busnb`` sub-command parser ``sub``."""
    from .data import DATASETS

    p = sub.add_parser("predict", help="segment a folder of images with a trained run")
    p.add_argument("run", help="trained run folder (or its best.pt)")
    p.add_argument("images", help="folder of images (PNG, JPEG, 8/16-bit, RGB) or one image")
    p.add_argument("--out", required=True, help="output folder (masks/, prob/, overlays/, predictions.csv)")
    p.add_argument("--threshold", type=float, default=0.5, help="probability threshold of the mask (0.5)")
    p.add_argument("--device", default="auto", help="auto (CUDA, MPS, CPU), cpu, cuda, cuda:1, ...")
    p.add_argument("--batch", type=int, default=16, help="images per forward pass (16)")
    p.set_defaults(fn=cmd_predict)

    e = sub.add_parser("evaluate", help="score a trained run on a dataset at original resolution (no training)")
    e.add_argument("run", help="trained run folder")
    e.add_argument("--dataset", required=True, choices=DATASETS)
    e.add_argument("--root", help="dataset folder (default: found automatically; required for 'folder')")
    e.add_argument("--part", default="test", choices=PARTS,
                   help="split part, or all images (use 'all' for a dataset the run was not trained on)")
    e.add_argument("--split-seed", type=int, default=0, help="split whose part is scored (default: 0)")
    e.add_argument("--device", default="auto", help="cpu, cuda, ... (default: auto)")
    e.set_defaults(fn=cmd_evaluate)
