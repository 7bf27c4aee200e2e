"""Strip outputs and execution counts from notebooks: ``python -m busnb.nbstrip notebooks/*.ipynb``."""
from __future__ import annotations

import sys

import nbformat


def strip(path: str) -> bool:
    nb = nbformat.read(path, as_version=4)
    changed = False
    for c in nb.cells:
        if c.cell_type == "code" and (c.outputs or c.execution_count):
            c.outputs, c.execution_count, changed = [], None, True
        if c.metadata.pop("execution", None) is not None:
            changed = True
    nb.metadata.pop("papermill", None)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    if changed:
        nbformat.write(nb, path)
    return changed


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print(("stripped " if strip(p) else "clean    ") + p)
