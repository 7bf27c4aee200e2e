"""Prompt bank: medical descriptors -> plain appearance phrases, and Grounding DINO text format.

APPG's observation is that open-vocabulary detectors trained on natural images respond
to what a lesion *looks like* ("dark oval") far better than to what it *is* ("tumor").
This module holds the translation table (BI-RADS lexicon terms to appearance words),
the paper's three phrases, comparison families, a phrase parser used by the weight-free
backend, and the text normalisation Grounding DINO expects (lower case, each phrase
ending with ``.``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable

# BI-RADS ultrasound lexicon term -> plain appearance word
DESCRIPTOR_TO_APPEARANCE: dict[str, dict[str, str]] = {
    "shape": {"oval": "oval", "round": "round", "irregular": "irregular"},
    "margin": {"circumscribed": "smooth", "indistinct": "blurry", "angular": "angular",
               "microlobulated": "lobulated", "lobulated": "lobulated", "spiculated": "spiky"},
    "echo": {"anechoic": "black", "hypoechoic": "dark", "isoechoic": "gray", "hyperechoic": "bright",
             "complex cystic and solid": "dark and bright", "heterogeneous": "mottled"},
}

PAPER_PROMPTS = ("dark oval", "dark round", "dark lobulated")

PROMPT_FAMILIES: dict[str, tuple[str, ...]] = {
    "appearance": PAPER_PROMPTS,
    "medical": ("tumor", "breast lesion", "hypoechoic mass"),
    "attribute": ("oval circumscribed mass", "irregular spiculated mass", "round hypoechoic nodule"),
    "contrast (control)": ("bright oval", "bright round"),
}

# words the weight-free backend understands (synonyms map to one canonical word)
INTENSITY_WORDS = {"dark": "dark", "black": "dark", "hypoechoic": "dark", "anechoic": "dark", "gray": None,
                   "bright": "bright", "white": "bright", "hyperechoic": "bright", "echogenic": "bright"}
SHAPE_WORDS = {"oval": "oval", "elliptical": "oval", "ellipse": "oval", "round": "round", "circular": "round",
               "lobulated": "lobulated", "microlobulated": "lobulated", "irregular": "irregular",
               "spiculated": "irregular", "spiky": "irregular", "angular": "irregular"}


def translate(descriptors: dict[str, str], translator: Callable[[dict], str] | None = None) -> str:
    """Appearance phrase for BI-RADS descriptors, e.g. ``{"echo": "hypoechoic", "shape": "oval"}`` -> "dark oval".

    ``translator`` may be any callable (a local LLM, a lookup of your own); the static table is the
    offline default. Unknown terms raise ``KeyError`` naming the term and the known ones.
    """
    if translator is not None:
        return normalize_phrase(translator(descriptors))
    words = []
    for field in ("echo", "margin", "shape"):
        term = descriptors.get(field)
        if term is None:
            continue
        table = DESCRIPTOR_TO_APPEARANCE[field]
        if term.lower() not in table:
            raise KeyError(f"unknown {field} descriptor {term!r}; known: {sorted(table)}")
        w = table[term.lower()]
        if w not in words:
            words.append(w)
    return " ".join(words)


def normalize_phrase(phrase: str) -> str:
    """Lower case, single spaces, no trailing dot."""
    return re.sub(r"\s+", " ", phrase.strip().lower()).rstrip(" .")


def to_gdino_text(phrases: str | Iterable[str]) -> str:
    """Grounding DINO text: lower-case phrases, each ending with '.', e.g. "dark oval. dark round."."""
    if isinstance(phrases, str):
        phrases = [p for p in phrases.split(".")]
    items = [normalize_phrase(p) for p in phrases]
    items = [p for p in items if p]
    if not items:
        raise ValueError("empty prompt: give at least one phrase, e.g. 'dark oval'")
    return " ".join(f"{p}." for p in items)


@dataclass(frozen=True)
class Appearance:
    """What a phrase says about the target: intensity ``dark``/``bright``/None, shape word or None."""

    intensity: str | None
    shape: str | None


def parse_phrase(phrase: str) -> Appearance:
    """Read intensity and shape words (with synonyms) from a phrase; medical words give ``None``."""
    words = re.findall(r"[a-z]+", phrase.lower())
    intensity = next((INTENSITY_WORDS[w] for w in words if w in INTENSITY_WORDS), None)
    shape = next((SHAPE_WORDS[w] for w in words if w in SHAPE_WORDS), None)
    return Appearance(intensity, shape)


def describe_phrase(phrase: str) -> str:
    """What the weight-free ``appearance`` backend reads in ``phrase``, in words, e.g. ``"dark, oval"``,
    ``"dark, any shape"`` ("hypoechoic mass") or ``"either polarity, any shape"`` ("tumor": no word it knows).

    A phrase without an intensity word accepts regions darker *or* brighter than their surroundings; one without
    a shape word gives every region the same shape score (0.5). Grounding DINO reads the whole phrase instead."""
    a = parse_phrase(phrase)
    return f"{a.intensity or 'either polarity'}, {a.shape or 'any shape'}"
