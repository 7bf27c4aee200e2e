import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def _isolated_dirs(tmp_path_factory):
    """Phantom, caches and runs of the tests go to a temporary folder, not the checkout."""
    base = tmp_path_factory.mktemp("busnb")
    for var in ("BUSNB_DATA", "BUSNB_CACHE", "BUSNB_RUNS"):
        os.environ[var] = str(base / var.lower())
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    yield


@pytest.fixture(scope="session")
def busi_root():
    from busnb.paths import find_dataset_root

    root = find_dataset_root("busi")
    if root is None:
        pytest.skip("BUSI not found: set BUSNB_BUSI_ROOT or place Dataset_BUSI_with_GT under data/BUSI/ "
                    "(or ../shared/data/BUSI/) to run the real-data tests")
    return root


@pytest.fixture(scope="session")
def busi(busi_root):
    from busnb.data import load_dataset

    return load_dataset("busi", root=busi_root)


@pytest.fixture(scope="session")
def phantom_small(tmp_path_factory):
    from busnb.data import PhantomConfig, load_phantom

    cfg = PhantomConfig(n_images=16, size=64, seed=3)
    return load_phantom(tmp_path_factory.mktemp("ph") / "phantom", cfg)


def write_png(path: Path, array, mode=None):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    im.save(path)
    return path


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module: on a shared 2-core machine two threads per process oversubscribe the
    cores (a 10x slower step was measured); restored afterwards."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_gdino_sam_backend(folder: Path, sam: str = "sam"):
    """A Grounding DINO + SAM (``sam``) or SAM 2 (``sam2``) backend on tiny random-init weights built and saved
    under ``folder`` by ``busnb.appg.tiny``; thresholds 0, so every detection is kept."""
    from busnb.appg import tiny
    from busnb.appg.gdino_sam import GDinoSamBackend

    build_sam = {"sam": tiny.build_tiny_sam, "sam2": tiny.build_tiny_sam2}[sam]
    return GDinoSamBackend(gdino=str(tiny.build_tiny_gdino(folder / "gdino")), sam=str(build_sam(folder / sam)),
                           box_threshold=0.0, text_threshold=0.0)
