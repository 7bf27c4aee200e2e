"""APPG: appearance-prompt pseudo-labels (training-free).

Backends turn an appearance phrase into boxes (``detect``) and boxes into masks (``segment``):
:class:`~busnb.appg.appearance.AppearanceBackend` needs no weights;
:class:`~busnb.appg.gdino_sam.GDinoSamBackend` runs Grounding DINO + SAM from local weights.
:mod:`busnb.appg.pipeline` runs a backend over a split with an area filter and a resumable cache.
"""
