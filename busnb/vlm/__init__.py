"""DuSSS's vision-language model (Pan, Qiao, Lou, Ji, Li: "Dual Semantic Similarity-Supervised Vision-Language
Model for Semi-Supervised Medical Image Segmentation"): texts (:mod:`.texts`), encoders (:mod:`.model`), Dual
Contrastive Learning and Semantic Similarity Supervision (:mod:`.losses`), pretraining as the ``vlm_pretrain``
stage and ``busnb vlm-pretrain`` (:mod:`.pretrain`), ``busnb pool-report`` (:mod:`.report`). The semi-supervised
method is ``busnb.methods.dusss``."""
from __future__ import annotations


def add_parsers(sub) -> None:
    """``busnb vlm-pretrain`` and ``busnb pool-report`` (registered by ``busnb.cli``)."""
    from .pretrain import add_parsers as add
    from .report import add_parsers as add_report

    add(sub)
    add_report(sub)
