"""3D (volumetric) semi-supervised segmentation: the dual-network method's own setting (arXiv 2509.13084).

* :mod:`busnb.vol.phantom` - seeded speckled volumes with ellipsoid and lobulated hypoechoic lesions;
* :mod:`busnb.vol.nets` - 3D networks from MONAI (V-Net, 3D U-Net, SegResNet) with decoder features;
* :mod:`busnb.vol.arrays` - :class:`VolumeArrays`: the same ``.batch(idx)`` / ``.to()`` interface as
  ``busnb.data.tensors.SegArrays``, with random patch crops in the batch and sliding-window inference
  (``monai.inferers.sliding_window_inference``) for validation, so the one trainer (``busnb.train.Trainer``)
  runs 5-D (N, C, D, H, W) data unchanged;
* :mod:`busnb.vol.metrics` - 3D Dice, IoU, HD95, ASD (voxels);
* :mod:`busnb.vol.experiment` - one 3D run: split, train, select on validation, test once, ``metrics.json``
  (``busnb train --profile phantom3d --method dual_uncertainty --ratio 10 --seed 0``).
"""
