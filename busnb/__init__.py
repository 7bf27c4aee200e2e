"""busnb: semi-supervised breast-ultrasound lesion segmentation, notebook first.

Modules, one concern each:

* :mod:`busnb.data`        - dataset readers (BUSI, BUS-BRA, UDIAT, folder, phantom), duplicates, tensors
* :mod:`busnb.splits`      - seeded, stratified, duplicate-aware split files
* :mod:`busnb.metrics`     - Dice, IoU, HD95, ASD with an explicit empty-mask policy
* :mod:`busnb.prompts`     - BI-RADS -> appearance phrases, Grounding DINO text format
* :mod:`busnb.appg`        - pseudo-label backends (appearance, Grounding DINO + SAM), cache, quality
* :mod:`busnb.uewf`        - entropy-weighted fusion of two teachers
* :mod:`busnb.aurcl`       - reverse contrastive loss on low-confidence pixels
* :mod:`busnb.models`      - smp U-Net that can also return decoder features
* :mod:`busnb.methods`     - supervised, dual-teacher and baseline methods as loss compositions
* :mod:`busnb.train`       - the one trainer;  :mod:`busnb.experiment` - one run end to end
* :mod:`busnb.runner`      - papermill runner behind ``busnb run``
"""

__version__ = "0.1.0"
