"""APPG backend ``gdino_sam``: Grounding DINO boxes from an appearance phrase, SAM masks from the boxes.

* Grounding DINO (Liu et al., ECCV 2024) through transformers' ``GroundingDinoForObjectDetection``
  and its processor; box and text thresholds, then class-agnostic NMS.
* The segmenter (``sam_kind``; ``auto`` tells it from ``sam``):

  - ``sam``: SAM (Kirillov et al., ICCV 2023) through transformers' ``SamModel`` (a hub id or a local
    folder) or an official segment-anything checkpoint (a ``.pth`` file);
  - ``sam2``: SAM 2 (Ravi et al. 2024, the image predictor) through transformers' ``Sam2Model``, e.g.
    ``facebook/sam2.1-hiera-tiny`` / ``-small`` / ``-base-plus`` / ``-large`` (a hub id or a local folder);
  - ``medsam``: MedSAM (Ma et al., Nature Communications 2024: SAM ViT-B fine-tuned on 1.5 M medical image-mask
    pairs, ultrasound among them), the official ``medsam_vit_b.pth`` loaded with segment-anything and fed as
    MedSAM was trained: the image min-max stretched and resized to 1024 x 1024, scaled to [0, 1] without
    SAM's mean/std; a transformers port of it (a ``SamModel`` folder) runs as ``sam`` with its own processor.

  The image embedding is computed once per image and reused for all its boxes; of the three multimask
  outputs the one with the highest predicted IoU is kept.
* bf16 on CUDA (fp16 where bf16 is unsupported), fp32 elsewhere.

Models are given as hub ids or local folders; nothing is downloaded when ``HF_HUB_OFFLINE=1``.
A missing model raises :class:`ModelNotFound` saying what to download and where to put it.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from ..models import pick_device
from ..paths import weights_dir
from ..prompts import to_gdino_text
from .types import Detection

DEFAULT_GDINO = "IDEA-Research/grounding-dino-tiny"
DEFAULT_SAM = "facebook/sam-vit-base"
SAM_PTH_TYPES = {"vit_h": "sam_vit_h_4b8939.pth", "vit_l": "sam_vit_l_0b3195.pth", "vit_b": "sam_vit_b_01ec64.pth"}


class ModelNotFound(RuntimeError):
    """Model weights are not on disk and cannot be fetched here."""


def _looks_local(spec: str) -> bool:
    """A path (exists, starts with . / ~, ends with .pth, or has more than one '/'), not a hub id 'org/name'."""
    return (Path(spec).expanduser().exists() or spec.startswith((".", "/", "~")) or spec.endswith(".pth")
            or spec.count("/") > 1 or os.sep != "/" and os.sep in spec)


def _missing(kind: str, spec: str, err: Exception | None = None) -> ModelNotFound:
    name = Path(spec).name if _looks_local(spec) else spec.split("/")[-1]
    hub = spec if not _looks_local(spec) else {"Grounding DINO": DEFAULT_GDINO, "SAM": DEFAULT_SAM}[kind]
    local = weights_dir() / name
    why = f" ({type(err).__name__}: {str(err).splitlines()[0][:200]})" if err else ""
    if spec.endswith(".pth") and "medsam" in Path(spec).name.lower():
        return ModelNotFound(
            f"MedSAM checkpoint '{spec}' not found{why}. Fix: download medsam_vit_b.pth from the MedSAM release "
            f"(github.com/bowang-lab/MedSAM, 'Model checkpoints'), put it at {weights_dir() / 'medsam_vit_b.pth'} "
            "and pass sam='<that path>' (sam_kind medsam is then chosen from the name).")
    if spec.endswith(".pth"):
        return ModelNotFound(
            f"{kind} checkpoint '{spec}' not found{why}. Fix: download one of {sorted(SAM_PTH_TYPES.values())} "
            f"from the segment-anything release (github.com/facebookresearch/segment-anything, 'Model Checkpoints') "
            f"and pass its path, e.g. sam='{weights_dir() / SAM_PTH_TYPES['vit_h']}' with sam_model_type='vit_h'.")
    return ModelNotFound(
        f"{kind} model '{spec}' is not available offline{why}. Fix: on a machine with internet run "
        f"`huggingface-cli download {hub} --local-dir {local}`, copy that folder here, and pass "
        f"{'gdino' if kind == 'Grounding DINO' else 'sam'}='{local}' (or set HF_HOME to a copied Hugging Face cache).")


def _load(cls, kind: str, spec: str, **kw):
    spec = str(spec)
    if _looks_local(spec) and not Path(spec).expanduser().exists():
        raise _missing(kind, spec)
    try:
        return cls.from_pretrained(str(Path(spec).expanduser()) if _looks_local(spec) else spec, **kw)
    except (OSError, ValueError, EnvironmentError) as e:
        raise _missing(kind, spec, e) from e


def weights_id(spec: str) -> str:
    """Stable id of a model for cache keys: the spec plus a hash of its local config or checkpoint size."""
    p = Path(str(spec)).expanduser()
    if p.is_dir() and (p / "config.json").is_file():
        return f"{p.name}:{hashlib.sha1((p / 'config.json').read_bytes()).hexdigest()[:8]}"
    if p.is_file():
        return f"{p.name}:{p.stat().st_size}"
    return str(spec)


def post_process(processor, outputs, input_ids, box_threshold: float, text_threshold: float, target_sizes):
    """Grounding DINO post-processing across transformers versions (``threshold`` vs ``box_threshold``)."""
    fn = processor.post_process_grounded_object_detection
    try:
        return fn(outputs, input_ids, threshold=box_threshold, text_threshold=text_threshold, target_sizes=target_sizes)
    except TypeError:  # transformers < 4.51 named it box_threshold
        return fn(outputs, input_ids, box_threshold=box_threshold, text_threshold=text_threshold,
                  target_sizes=target_sizes)


def _rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image[..., :3]


class _HFSam:
    """SAM through transformers (``SamModel`` / ``SamProcessor``); :class:`_HFSam2` swaps in SAM 2."""

    model_cls, processor_cls = "SamModel", "SamProcessor"

    def __init__(self, spec, device, dtype):
        import transformers

        self.model = _load(getattr(transformers, self.model_cls), "SAM", spec, dtype=dtype).to(device).eval()
        self.processor = _load(getattr(transformers, self.processor_cls), "SAM", spec)
        self.device, self.dtype = device, dtype
        self._key, self._emb = None, None

    def _post_process(self, pred_masks, inp):
        return self.processor.image_processor.post_process_masks(
            pred_masks, inp["original_sizes"], inp["reshaped_input_sizes"])[0]

    @torch.no_grad()
    def masks_for_boxes(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rgb = _rgb(image)
        inp = self.processor(images=rgb, input_boxes=[boxes.tolist()], return_tensors="pt")
        key = hashlib.sha1(rgb.tobytes()).hexdigest()
        if key != self._key:  # the image embedding (SAM 2: multi-level features), once per image, for every box
            self._emb = self.model.get_image_embeddings(inp["pixel_values"].to(self.device, self.dtype))
            self._key = key
        out = self.model(image_embeddings=self._emb, input_boxes=inp["input_boxes"].to(self.device, self.dtype),
                         multimask_output=True)
        masks = self._post_process(out.pred_masks.float().cpu(), inp)  # (n_box, 3, H, W)
        iou = out.iou_scores.float().cpu()[0]  # (n_box, 3)
        best = iou.argmax(-1)
        idx = torch.arange(len(best))
        return masks[idx, best].numpy().astype(bool), iou[idx, best].numpy()


class _HFSam2(_HFSam):
    """SAM 2 image predictor through transformers (``Sam2Model`` / ``Sam2Processor``)."""

    model_cls, processor_cls = "Sam2Model", "Sam2Processor"

    def _post_process(self, pred_masks, inp):
        return self.processor.post_process_masks(pred_masks, inp["original_sizes"])[0]


MEDSAM_SIZE = 1024


def medsam_inputs(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MedSAM's preprocessing (its inference script): the image min-max stretched to 0..255 and resized to
    1024 x 1024 (not aspect-preserving), RGB; boxes (xyxy pixels) scaled to that grid."""
    from PIL import Image

    rgb = _rgb(image).astype(np.float32)
    lo, hi = float(rgb.min()), float(rgb.max())
    rgb = (rgb - lo) / max(hi - lo, 1e-8) * 255.0
    h, w = rgb.shape[:2]
    big = np.asarray(Image.fromarray(rgb.astype(np.uint8)).resize((MEDSAM_SIZE, MEDSAM_SIZE), Image.BICUBIC))
    scale = np.array([MEDSAM_SIZE / w, MEDSAM_SIZE / h] * 2, dtype=np.float32)
    return np.ascontiguousarray(big), np.asarray(boxes, dtype=np.float32) * scale


class _PthSam:
    def __init__(self, path, model_type, device, medsam: bool = False):
        from segment_anything import SamPredictor, sam_model_registry

        if not Path(path).expanduser().is_file():
            raise _missing("SAM", str(path))
        if model_type not in sam_model_registry:
            raise ValueError(f"sam_model_type must be one of {sorted(sam_model_registry)}")
        sam = sam_model_registry[model_type](checkpoint=str(Path(path).expanduser()))
        self.medsam = medsam
        if medsam:  # MedSAM was trained on images in [0, 1]: no ImageNet mean/std
            sam.pixel_mean.zero_()
            sam.pixel_std.fill_(255.0)
        self.predictor = SamPredictor(sam.to(device).eval())
        self._key = None

    @torch.no_grad()
    def masks_for_boxes(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.medsam:
            from PIL import Image

            h, w = image.shape[:2]
            big, bb = medsam_inputs(image, boxes)
            masks, iou = self._predict(big, bb)
            small = np.stack([np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((w, h), Image.NEAREST)) > 127
                              for m in masks]) if len(masks) else np.zeros((0, h, w), bool)
            return small, iou
        return self._predict(np.ascontiguousarray(_rgb(image)), boxes)

    def _predict(self, rgb: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        key = hashlib.sha1(rgb.tobytes()).hexdigest()
        if key != self._key:
            self.predictor.set_image(rgb)
            self._key = key
        tb = self.predictor.transform.apply_boxes_torch(torch.as_tensor(boxes, dtype=torch.float,
                                                                        device=self.predictor.device), rgb.shape[:2])
        masks, iou, _ = self.predictor.predict_torch(None, None, boxes=tb, multimask_output=True)
        best = iou.argmax(-1)
        idx = torch.arange(len(best))
        return masks[idx, best].cpu().numpy().astype(bool), iou[idx, best].cpu().numpy()


SAM_KINDS = ("auto", "sam", "sam2", "medsam")


def sam_kind_of(spec: str, kind: str = "auto") -> str:
    """``sam``, ``sam2`` or ``medsam`` for a segmenter spec: ``kind`` when given; else a ``.pth`` whose name
    has 'medsam' is MedSAM, other ``.pth`` files SAM; a folder's ``config.json`` model_type (``sam2`` /
    ``sam2_video`` -> SAM 2); a hub id with 'sam2' in it -> SAM 2; otherwise SAM."""
    if kind not in SAM_KINDS:
        raise ValueError(f"sam_kind={kind!r}: choose one of {SAM_KINDS}")
    if kind != "auto":
        return kind
    spec = str(spec)
    if spec.endswith(".pth"):
        return "medsam" if "medsam" in Path(spec).name.lower() else "sam"
    cfg = Path(spec).expanduser() / "config.json"
    if cfg.is_file():
        import json

        return "sam2" if json.loads(cfg.read_text()).get("model_type", "").startswith("sam2") else "sam"
    return "sam2" if "sam2" in spec.lower() else "sam"


class GDinoSamBackend:
    """``detect(image, phrase)`` with Grounding DINO, ``segment(image, detections)`` with SAM."""

    name = "gdino_sam"

    def __init__(self, gdino: str = DEFAULT_GDINO, sam: str = DEFAULT_SAM, box_threshold: float = 0.3,
                 text_threshold: float = 0.25, nms_iou: float = 0.5, device: str = "auto",
                 sam_model_type: str = "vit_h", batch_size: int = 4, sam_kind: str = "auto"):
        from transformers import GroundingDinoForObjectDetection, GroundingDinoProcessor

        self.device = pick_device(device)
        if self.device.type == "cuda":
            self.dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            self.dtype = torch.float32
        self.gdino_spec, self.sam_spec = str(gdino), str(sam)
        self.box_threshold, self.text_threshold, self.nms_iou = box_threshold, text_threshold, nms_iou
        self.batch_size = batch_size
        self.gdino = _load(GroundingDinoForObjectDetection, "Grounding DINO", self.gdino_spec,
                           dtype=self.dtype).to(self.device).eval()
        self.processor = _load(GroundingDinoProcessor, "Grounding DINO", self.gdino_spec)
        self.sam_kind = sam_kind_of(self.sam_spec, sam_kind)
        if self.sam_kind == "medsam":
            if not self.sam_spec.endswith(".pth"):
                raise ValueError(f"sam_kind='medsam' takes the official checkpoint (medsam_vit_b.pth), not "
                                 f"{self.sam_spec!r}; a transformers port of MedSAM (a SamModel folder) runs as "
                                 "sam_kind='sam'.")
            self.sam = _PthSam(self.sam_spec, "vit_b", self.device, medsam=True)
        elif self.sam_kind == "sam2":
            self.sam = _HFSam2(self.sam_spec, self.device, self.dtype)
        elif self.sam_spec.endswith(".pth"):
            self.sam = _PthSam(self.sam_spec, sam_model_type, self.device)
        else:
            self.sam = _HFSam(self.sam_spec, self.device, self.dtype)

    def id(self) -> dict:
        return {"backend": self.name, "gdino": weights_id(self.gdino_spec), "sam": weights_id(self.sam_spec),
                "sam_kind": self.sam_kind,
                "box_threshold": self.box_threshold, "text_threshold": self.text_threshold, "nms_iou": self.nms_iou}

    @torch.no_grad()
    def detect_batch(self, images: list[np.ndarray], phrase: str, box_threshold: float | None = None,
                     top_k: int | None = None) -> list[list[Detection]]:
        """Boxes in pixel xyxy of each input image, best first, after thresholds and NMS."""
        from torchvision.ops import nms

        text = to_gdino_text(phrase)
        bt = self.box_threshold if box_threshold is None else box_threshold
        out = []
        for i in range(0, len(images), self.batch_size):
            chunk = [_rgb(im) for im in images[i: i + self.batch_size]]
            inp = self.processor(images=chunk, text=[text] * len(chunk), return_tensors="pt", padding=True)
            inp = {k: (v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device))
                   for k, v in inp.items()}
            res = post_process(self.processor, self.gdino(**inp), inp["input_ids"], bt, self.text_threshold,
                               [im.shape[:2] for im in chunk])
            for im, r in zip(chunk, res):
                boxes, scores = r["boxes"].float().cpu(), r["scores"].float().cpu()
                labels = r["text_labels"] if "text_labels" in r else [""] * len(scores)
                h, w = im.shape[:2]
                boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
                boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
                ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
                keep = [int(k) for k in nms(boxes, scores, self.nms_iou) if ok[k]]
                dets = [Detection(tuple(map(float, boxes[k])), float(scores[k]), str(labels[k]) or phrase)
                        for k in keep]
                out.append(dets[:top_k] if top_k else dets)
        return out

    def detect(self, image: np.ndarray, phrase: str, box_threshold: float | None = None,
               top_k: int | None = None) -> list[Detection]:
        return self.detect_batch([image], phrase, box_threshold, top_k)[0]

    def segment(self, image: np.ndarray, detections: list[Detection]) -> list[tuple[np.ndarray, float]]:
        if not detections:
            return []
        boxes = np.array([d.box for d in detections], dtype=np.float32)
        masks, scores = self.sam.masks_for_boxes(image, boxes)
        return [(m, float(s)) for m, s in zip(masks, scores)]
