"""Training methods, selectable by name (``busnb run``, ``05_train.ipynb``), and named variants.

A *variant* is a method plus options, e.g. the paper's ablation rows (``ABLATION``)."""
from __future__ import annotations

import json

from .base import Method, Supervised
from .classic import BCP, CrossPseudoSupervision, MeanTeacher
from .dual_teacher import ABLATION, DualTeacher
from .dual_uncertainty import DualUncertainty
from .dusss import ABLATION_DUSSS, DuSSS

METHODS: dict[str, type[Method]] = {"supervised": Supervised, "dual_teacher": DualTeacher, "mean_teacher": MeanTeacher,
                                    "cps": CrossPseudoSupervision, "bcp": BCP, "dual_uncertainty": DualUncertainty}
METHODS["dusss"] = DuSSS

# Ablation of the dual-network uncertainty-guided method: one switch off at a time
DUAL_UNCERTAINTY_ABLATION = {
    "dual_uncertainty-no_entropy_filter": ("dual_uncertainty", {"entropy_filter": False}),
    "dual_uncertainty-no_kl_weighting": ("dual_uncertainty", {"kl_weighting": False}),
    "dual_uncertainty-no_prototype": ("dual_uncertainty", {"prototype": False}),
    "dual_uncertainty-no_cosine": ("dual_uncertainty", {"cosine": False}),
    "dual_uncertainty-bce_dice": ("dual_uncertainty", {"pseudo_loss": "bce_dice"}),
    "dual_uncertainty-paper_weights": ("dual_uncertainty", {"unsup_rampup": False}),
    "dual_uncertainty-joint_bn": ("dual_uncertainty", {"joint_bn": True}),
    "dual_uncertainty-release": ("dual_uncertainty", {"unsup_rampup": False, "joint_bn": True}),
}

# name -> (method, options); every ablation row plus the methods themselves with defaults
VARIANTS: dict[str, tuple[str, dict]] = {**{m: (m, {}) for m in METHODS}, **ABLATION, **DUAL_UNCERTAINTY_ABLATION,
                                         "cps-bce_dice": ("cps", {"pseudo_loss": "bce_dice"}),
                                         "cps-joint_bn": ("cps", {"joint_bn": True}),
                                         "bcp-no_largest_cc": ("bcp", {"largest_cc": False}),
                                         "bcp-plain_pretrain": ("bcp", {"pretrain_copy_paste": False, "batch_norm": "shared"}),
                                         "bcp-shared_bn": ("bcp", {"batch_norm": "shared"}),
                                         "mean_teacher-student_noise": ("mean_teacher", {"student_noise": True}),
                                         "mean_teacher-teacher": ("mean_teacher", {"evaluate": "teacher"}),
                                         "mean_teacher-release_bn": ("mean_teacher", {"batch_norm": "release"}),
                                         "mean_teacher-joint_bn": ("mean_teacher", {"joint_bn": True}),
                                         "mean_teacher-all_consistency": ("mean_teacher", {"consistency": "all"}),
                                         "mean_teacher-ema_mean": ("mean_teacher", {"ema_warmup": "mean"})}
VARIANTS.update({"dusss": ("dusss", {}), **ABLATION_DUSSS})

# The baseline comparison (`busnb run --variants baselines`; 06_results: one table per dataset and ratio)
BASELINES = ("supervised", "mean_teacher", "cps", "bcp", "dual_uncertainty")

# Variants that `busnb run` trains in 05_train.ipynb for every profile (ablation: -p variants '[...]').
RUN_BY_DEFAULT = ("supervised", "+static", "dual_teacher")

# Names that stand for several variants on the command line (`busnb run --variants baselines`).
GROUPS: dict[str, tuple[str, ...]] = {
    "default": RUN_BY_DEFAULT,
    "baselines": BASELINES,
    "ablation": tuple(ABLATION),
    "dual_uncertainty_ablation": ("dual_uncertainty", *DUAL_UNCERTAINTY_ABLATION),
}
GROUPS["dusss_ablation"] = ("dusss", *ABLATION_DUSSS)


def expand_variants(names) -> tuple[str, ...]:
    """Variant names with group names (``GROUPS``) expanded, order kept, duplicates dropped;
    an unknown name raises ValueError listing the valid ones."""
    out: list[str] = []
    for n in names:
        for v in GROUPS.get(n, (n,)):
            if v not in VARIANTS:
                raise ValueError(f"unknown variant {v!r}; choose from {sorted(VARIANTS)} or a group {sorted(GROUPS)}")
            if v not in out:
                out.append(v)
    return tuple(out)


def check_method_kwargs(name: str, kwargs: dict | None) -> None:
    """Method options (``busnb train --method-arg key=value``) checked against the method's constructor before
    anything is loaded or written: each name must be one of its parameters, and a value must have the type of
    that parameter's default (bool, number or string; a parameter whose default is None takes any value).
    Raises :class:`busnb.config.SettingError` naming the option, what it takes and the valid names."""
    import inspect

    from ..config import SettingError

    if not kwargs:
        return
    base = VARIANTS[name][0] if name in VARIANTS else name
    if base not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(VARIANTS)}")
    params = {k: v for k, v in inspect.signature(METHODS[base].__init__).parameters.items()
              if k not in ("self", "make_net") and v.kind is v.POSITIONAL_OR_KEYWORD}
    if base == "supervised" and name != "supervised":
        params = {}  # a supervised variant (e.g. baseline) builds a plain Supervised: it takes no options
    for k, v in kwargs.items():
        if k not in params:
            raise SettingError(f"--method-arg {k}: '{name}' has no option {k!r}; its options: "
                               f"{sorted(params) or 'none'}. Fix: check the name (the method's docstring lists them).")
        d = params[k].default
        if d is None or d is inspect.Parameter.empty:
            continue
        ok = (isinstance(v, bool) if isinstance(d, bool) else
              isinstance(v, (int, float)) and not isinstance(v, bool) if isinstance(d, (int, float)) else
              isinstance(v, type(d)))
        if not ok:
            kind = "true or false" if isinstance(d, bool) else "a number" if isinstance(d, (int, float)) else "text"
            raise SettingError(f"--method-arg {k}={v!r}: '{name}' takes {kind} for {k} (default {d!r}). "
                               f"Fix: e.g. --method-arg {k}={json.dumps(d)}.")


def build_method(name: str, make_net, **kwargs) -> Method:
    if name in VARIANTS and name not in METHODS:
        base, opts = VARIANTS[name]
        if base == "supervised":
            return Supervised(make_net)
        return METHODS[base](make_net, **{**opts, **kwargs})
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(VARIANTS)}")
    return METHODS[name](make_net, **kwargs)
