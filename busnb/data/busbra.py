"""BUS-BRA (Gomez-Flores et al., Med. Phys. 2024): ``Images/bus_XXXX-s.png``,
``Masks/mask_XXXX-s.png`` and ``bus_data.csv`` (columns ``ID``, ``Pathology``, ``Case``).

Images of one patient (``Case``) form one group, so no patient straddles splits.
"""
from __future__ import annotations

import csv
from pathlib import Path

from .io import DataError
from .record import Sample


def load_busbra(root: str | Path) -> list[Sample]:
    root = Path(root)
    csv_path, idir, mdir = root / "bus_data.csv", root / "Images", root / "Masks"
    for p in (csv_path, idir, mdir):
        if not p.exists():
            raise DataError(f"{p}: missing. Fix: point root at the unpacked BUS-BRA folder (Images/, Masks/, bus_data.csv).")
    out = []
    with csv_path.open(newline="") as fh:
        for i, row in enumerate(csv.DictReader(fh), start=2):
            try:
                bid = row["ID"]
            except KeyError as e:
                raise DataError(f"{csv_path}: no 'ID' column. Fix: use the bus_data.csv shipped with BUS-BRA.") from e
            img = idir / f"{bid}.png"
            mask = mdir / f"{bid.replace('bus_', 'mask_', 1)}.png"
            if not img.is_file():
                raise DataError(f"{csv_path}:{i}: lists {bid} but {img} is missing. Fix: restore the image.")
            if not mask.is_file():
                raise DataError(f"{img}: image without mask {mask}. Fix: restore the mask.")
            cls = (row.get("Pathology") or "lesion").strip().lower()
            out.append(Sample(bid, img, (mask,), cls, f"case{row.get('Case') or bid}"))
    if not out:
        raise DataError(f"{csv_path}: no rows. Fix: use the bus_data.csv shipped with BUS-BRA.")
    return out
