"""Texts for ultrasound images: what DuSSS's vision-language pretraining reads beside each image.

Which information each sentence uses (so that nothing leaks from validation or test, nor from the masks of
the unlabeled pool):

=================  ===========================================================  ======================================
source             what                                                         images
=================  ===========================================================  ======================================
``class``          the image-level class the reader gives without any mask:     every train-pool image
                   BUSI's folder (benign / malignant), BUS-BRA's ``Pathology``
                   column (the reader exposes no BI-RADS column), the phantom's
                   ``labels.csv`` class (its lesion shape word), a folder's
                   ``labels.csv``
``bank``           the appearance phrase bank of ``busnb.prompts`` (the paper's every train-pool image
                   phrases, the BI-RADS -> appearance table): the same for
                   every image, a prior, not a per-image fact
``mask``           shape (oval / round / lobulated / irregular from the mask's  **labeled images only**
                   solidity and axis ratio), size (area fraction) and position
                   (centroid: upper / middle / lower, left / centre / right)
                   read from the ground-truth mask
=================  ===========================================================  ======================================

:func:`pool_texts` is the only function that opens a mask file, and only for the ids passed as ``labeled``;
:func:`describe` of an unlabeled sample never touches ``sample.masks`` (a test gives one a missing mask file).
Validation and test images get no text at all: pretraining reads the train pool only.

Every word a sentence can contain is in :data:`VOCAB`, so the text encoder trained here has a fixed
vocabulary that does not depend on the data (its architecture is reproducible from the stage parameters).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..prompts import DESCRIPTOR_TO_APPEARANCE, PAPER_PROMPTS, SHAPE_WORDS

SHAPES = ("oval", "round", "lobulated", "irregular")
SIZES = ("small", "medium", "large")
ROWS = ("upper", "middle", "lower")
COLS = ("left", "central", "right")

# phrases of one target (the lesion), lexically different; used for the activation maps and refinement
LESION_PHRASES = ("a dark oval lesion", "a hypoechoic breast mass", "a breast tumor", "a dark round nodule")
# what the lesion phrases compete with at every patch in the grounding term (busnb.vlm.losses.grounding_loss)
BACKGROUND_PHRASE = "no visible lesion"

_CLASS_WORDS = {"benign": ("benign",), "malignant": ("malignant",)}
_TEMPLATE_WORDS = ("a an the in of with and is breast ultrasound image lesion mass tumor nodule dark hypoechoic "
                   "shows no visible region part upper middle lower left central right small medium large").split()


def _bank_words() -> list[str]:
    words = []
    for table in DESCRIPTOR_TO_APPEARANCE.values():
        for k, v in table.items():
            words += k.split() + v.split()
    for p in PAPER_PROMPTS:
        words += p.split()
    words += list(SHAPE_WORDS)
    return words


def _build_vocab() -> tuple[str, ...]:
    out = []
    for w in [*_TEMPLATE_WORDS, *SHAPES, *SIZES, *ROWS, *COLS, *_bank_words(), "benign", "malignant", "normal",
              "lesion", "pathology", "unknown", *" ".join(LESION_PHRASES).split()]:
        w = w.lower()
        if re.fullmatch(r"[a-z]+", w) and w not in out:
            out.append(w)
    return tuple(out)


SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")
VOCAB: tuple[str, ...] = _build_vocab()


@dataclass(frozen=True)
class MaskFacts:
    """Shape, size and position of a lesion read from a (labeled) mask."""

    shape: str | None
    size: str | None
    row: str | None
    col: str | None

    @property
    def empty(self) -> bool:
        return self.shape is None


def mask_facts(mask: np.ndarray) -> MaskFacts:
    """Shape word from the largest component (solidity < 0.8: irregular, < 0.9: lobulated, else minor /
    major axis > 0.8: round, else oval; components under 150 px only round / oval), size from the union's area fraction (< 2 %: small, < 8 %: medium,
    else large), position from the union's centroid in thirds of the image."""
    from skimage.measure import label, regionprops

    m = np.asarray(mask, bool)
    if not m.any():
        return MaskFacts(None, None, None, None)
    lab = label(m)
    reg = max(regionprops(lab), key=lambda r: r.area)
    ratio = reg.axis_minor_length / max(reg.axis_major_length, 1e-6)
    if reg.area >= 150 and reg.solidity < 0.8:  # below ~150 px pixelation alone lowers solidity
        shape = "irregular"
    elif reg.area >= 150 and reg.solidity < 0.9:
        shape = "lobulated"
    else:
        shape = "round" if ratio > 0.8 else "oval"
    frac = m.mean()
    size = "small" if frac < 0.02 else "medium" if frac < 0.08 else "large"
    ys, xs = np.nonzero(m)
    h, w = m.shape
    row = ROWS[min(2, int(3 * ys.mean() / h))]
    col = COLS[min(2, int(3 * xs.mean() / w))]
    return MaskFacts(shape, size, row, col)


def class_phrase(cls: str) -> str:
    """The class as words: benign / malignant, a shape word (phantom), else a plain lesion."""
    c = (cls or "").lower().strip()
    if c in ("benign", "malignant"):
        return f"{c} breast lesion"
    if c in SHAPE_WORDS:
        return f"dark {SHAPE_WORDS[c]} lesion"
    if c == "normal":
        return "breast ultrasound image with no visible lesion"
    return "breast lesion"


def _a(phrase: str) -> str:
    """The phrase with its indefinite article: "an oval ...", "a dark ..."."""
    return f"{'an' if phrase[:1].lower() in 'aeiou' else 'a'} {phrase}"


def describe(sample, facts: MaskFacts | None = None) -> list[dict]:
    """Candidate sentences of one train-pool image, each ``{"text", "uses"}`` (``uses``: the sources of the
    module table). ``facts`` (from the image's mask) only for labeled images; without them the sentences use
    the class and the phrase bank only, and ``sample.masks`` is not read."""
    cp = class_phrase(sample.cls)
    out = [{"text": _a(cp), "uses": ("class",)},
           {"text": f"breast ultrasound image of {_a(cp)}", "uses": ("class",)},
           {"text": _a(f"{PAPER_PROMPTS[0]} lesion"), "uses": ("bank",)},
           {"text": _a(f"hypoechoic {cp}"), "uses": ("class", "bank")}]
    if facts is not None:
        if facts.empty:
            out.append({"text": "no visible lesion", "uses": ("mask",)})
        else:
            loc = f"in the {facts.row} {facts.col} part" if (facts.row, facts.col) != ("middle", "central") \
                else "in the central part"
            shaped = cp if facts.shape in cp.split() else f"{facts.shape} {cp}"  # the phantom's class is a shape
            out += [{"text": f"a {facts.size} dark {facts.shape} lesion {loc}", "uses": ("mask", "bank")},
                    {"text": f"a {facts.size} {cp} {loc}", "uses": ("class", "mask")},
                    {"text": f"{_a(shaped)} {loc}", "uses": ("class", "mask")}]
    merged: dict[str, tuple] = {}  # one sentence once (on the phantom the class word is the bank's shape word)
    for t in out:
        merged[t["text"]] = tuple(dict.fromkeys(merged.get(t["text"], ()) + tuple(t["uses"])))
    return [{"text": k, "uses": v} for k, v in merged.items()]


def pool_texts(labeled, unlabeled, read_mask=None) -> dict[str, list[dict]]:
    """id -> candidate sentences for the train pool: labeled samples with mask facts (their masks are read
    here, with ``read_mask(sample)`` or the dataset's own mask files), unlabeled ones from class and bank
    only (their masks are never opened). Validation and test samples must not be passed."""
    if read_mask is None:
        from ..data.io import read_union_mask

        def read_mask(s):
            return read_union_mask(s.masks, None, s.image)

    out = {s.id: describe(s, mask_facts(read_mask(s))) for s in labeled}
    for s in unlabeled:
        if s.id in out:
            raise ValueError(f"sample {s.id!r} is both labeled and unlabeled; pass disjoint sets")
        out[s.id] = describe(s)
    return out


def check_words(text: str) -> list[str]:
    """Words of ``text`` outside :data:`VOCAB` (the trained-here encoder maps them to [UNK])."""
    return [w for w in re.findall(r"[a-z]+", text.lower()) if w not in VOCAB]
