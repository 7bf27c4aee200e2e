"""busnb: semi-supervised breast-ultrasound lesion segmentation, notebook first.

Subpackages and modules, one concern each:

* :mod:`busnb.data`    - dataset readers (BUSI, BUS-BRA, UDIAT, folder, phantom), duplicates, tensors
* :mod:`busnb.splits`  - seeded, stratified, duplicate-aware split files
* :mod:`busnb.metrics` - Dice, IoU, HD95, ASD with an explicit empty-mask policy
* :mod:`busnb.models`  - smp U-Net that can also return decoder features
* :mod:`busnb.train`   - the one trainer; methods are compositions of loss terms
* :mod:`busnb.runner`  - papermill runner behind ``busnb run``
"""

__version__ = "0.1.0"
