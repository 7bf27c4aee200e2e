"""BUS-BRA (Gomez-Flores et al., Med. Phys. 2024): ``Images/bus_XXXX-s.png``,
``Masks/mask_XXXX-s.png`` and ``bus_data.csv`` (columns ``ID``, ``Pathology``, ``Case``).

Images of one patient (``Case``) form one group, so no patient straddles splits
(duplicate detection at split time merges groups, never splits them). An image in
``Images/`` that ``bus_data.csv`` does not list is an error; dot-files are skipped
with a printed count.
"""
from __future__ import annotations

import csv
from pathlib import Path

from .io import DataError, examples, list_image_files
from .record import Sample


def load_busbra(root: str | Path) -> list[Sample]:
    root = Path(root)
    csv_path, idir, mdir = root / "bus_data.csv", root / "Images", root / "Masks"
    for p in (csv_path, idir, mdir):
        if not p.exists():
            raise DataError(f"{p}: missing. Fix: point root at the unpacked BUS-BRA folder (Images/, Masks/, bus_data.csv).")
    out = []
    with csv_path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if "ID" not in [f.strip() for f in reader.fieldnames or []]:
            raise DataError(f"{csv_path}: no 'ID' column. Fix: use the bus_data.csv shipped with BUS-BRA.")
        for i, raw in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in raw.items() if isinstance(k, str)}
            bid = row["ID"]
            img = idir / f"{bid}.png"
            mask = mdir / f"{bid.replace('bus_', 'mask_', 1)}.png"
            if not img.is_file():
                raise DataError(f"{csv_path}:{i}: lists {bid} but {img} is missing. Fix: restore the image.")
            if not mask.is_file():
                raise DataError(f"{img}: image without mask {mask}. Fix: restore the mask.")
            cls = (row.get("Pathology") or "lesion").lower()
            out.append(Sample(bid, img, (mask,), cls, f"case{row.get('Case') or bid}"))
    if not out:
        raise DataError(f"{csv_path}: no rows. Fix: use the bus_data.csv shipped with BUS-BRA.")
    listed = {s.id for s in out}
    extra = [f for f in list_image_files(idir, (".png",)) if f.stem not in listed]
    if extra:
        raise DataError(f"{idir}: {len(extra)} image(s) not listed in {csv_path.name}: {examples(extra)}. "
                        "Fix: remove them, or add their rows (ID, Pathology, Case).")
    return out
