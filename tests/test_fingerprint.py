"""Dataset fingerprints: ids travel between copies, content names the exact bytes, digests are cached."""
import hashlib
import json
import os

import numpy as np
from PIL import Image

from busnb.data import dataset_fingerprint, file_digest
from busnb.data.fingerprint import ids_fingerprint
from busnb.data.folder import load_folder
from busnb.paths import cache_dir
from conftest import write_png


def _dataset(root, size=(20, 30), n=3):
    for i in range(n):
        img = np.full(size, 40 + 10 * i, np.uint8)
        m = np.zeros(size, np.uint8)
        m[2:6, 3 + i: 9 + i] = 255
        write_png(root / "images" / f"im{i}.png", img)
        write_png(root / "masks" / f"im{i}.png", m)
    (root / "labels.csv").write_text("id,class\n" + "".join(f"im{i},{'ab'[i % 2]}\n" for i in range(n)))
    return load_folder(root)


def test_file_digest_is_sha1_and_cached_by_size_and_mtime(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"hello")
    assert file_digest(f) == hashlib.sha1(b"hello").hexdigest()
    cache = cache_dir() / "fingerprints.json"
    entry = json.loads(cache.read_text())[str(f.absolute())]
    assert entry[:2] == [5, f.stat().st_mtime_ns]
    # the cached digest is used while size and mtime are unchanged ...
    from busnb.data import fingerprint as F

    F._memo[str(cache)][str(f.absolute())][2] = "cached-not-recomputed"
    assert file_digest(f) == "cached-not-recomputed"
    # ... and recomputed when the file changes
    f.write_bytes(b"HELLO")
    os.utime(f, ns=(entry[1] + 10**9, entry[1] + 10**9))
    assert file_digest(f) == hashlib.sha1(b"HELLO").hexdigest()
    assert json.loads(cache.read_text())[str(f.absolute())][2] == hashlib.sha1(b"HELLO").hexdigest()


def test_resized_copy_same_ids_other_content(tmp_path):
    a = _dataset(tmp_path / "a")
    b = _dataset(tmp_path / "b", size=(10, 15))  # same ids and classes, other pixels
    fa, fb = dataset_fingerprint(a), dataset_fingerprint(b)
    assert fa["n_images"] == 3 and len(fa["ids"]) == len(fa["content"]) == 12
    assert fa["ids"] == fb["ids"] and fa["content"] != fb["content"]
    assert dataset_fingerprint(a[::-1]) == fa  # order of samples does not matter
    c = _dataset(tmp_path / "c")  # byte-identical copy elsewhere: same content
    assert dataset_fingerprint(c)["content"] == fa["content"]


def test_fingerprint_changes_with_class_mask_or_membership(tmp_path):
    s = _dataset(tmp_path / "a")
    f0 = dataset_fingerprint(s)
    assert ids_fingerprint([s[0].with_group("g")] + s[1:]) == f0["ids"]  # groups are not identity
    relabeled = [type(s[0])(s[0].id, s[0].image, s[0].masks, "z", s[0].group)] + s[1:]
    assert dataset_fingerprint(relabeled)["ids"] != f0["ids"]
    assert dataset_fingerprint(s[:2])["ids"] != f0["ids"]
    m = np.asarray(Image.open(s[1].masks[0])).copy()
    m[0, 0] = 255
    Image.fromarray(m).save(s[1].masks[0])
    os.utime(s[1].masks[0], ns=(1, 1))  # a new mtime, so the cached digest is not reused
    f1 = dataset_fingerprint(s)
    assert f1["ids"] == f0["ids"] and f1["content"] != f0["content"]
