"""APPG backend ``gdino_sam``: Grounding DINO boxes from an appearance phrase, SAM masks from the boxes.

* Grounding DINO (Liu et al., ECCV 2024) through transformers' ``GroundingDinoForObjectDetection``
  and its processor; box and text thresholds, then class-agnostic NMS.
* SAM (Kirillov et al., ICCV 2023) through transformers' ``SamModel`` (a hub id or a local folder)
  or an official segment-anything checkpoint (a ``.pth`` file). The image embedding is computed
  once per image and reused for all its boxes; of SAM's three multimask outputs the one with the
  highest predicted IoU is kept.
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
    def __init__(self, spec, device, dtype):
        from transformers import SamModel, SamProcessor

        self.model = _load(SamModel, "SAM", spec, dtype=dtype).to(device).eval()
        self.processor = _load(SamProcessor, "SAM", spec)
        self.device, self.dtype = device, dtype
        self._key, self._emb = None, None

    @torch.no_grad()
    def masks_for_boxes(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rgb = _rgb(image)
        inp = self.processor(images=rgb, input_boxes=[boxes.tolist()], return_tensors="pt")
        key = hashlib.sha1(rgb.tobytes()).hexdigest()
        if key != self._key:  # one image embedding per image, reused for every box
            self._emb = self.model.get_image_embeddings(inp["pixel_values"].to(self.device, self.dtype))
            self._key = key
        out = self.model(image_embeddings=self._emb, input_boxes=inp["input_boxes"].to(self.device, self.dtype),
                         multimask_output=True)
        masks = self.processor.image_processor.post_process_masks(
            out.pred_masks.float().cpu(), inp["original_sizes"], inp["reshaped_input_sizes"])[0]  # (n_box, 3, H, W)
        iou = out.iou_scores.float().cpu()[0]  # (n_box, 3)
        best = iou.argmax(-1)
        idx = torch.arange(len(best))
        return masks[idx, best].numpy().astype(bool), iou[idx, best].numpy()


class _PthSam:
    def __init__(self, path, model_type, device):
        from segment_anything import SamPredictor, sam_model_registry

        if not Path(path).expanduser().is_file():
            raise _missing("SAM", str(path))
        if model_type not in sam_model_registry:
            raise ValueError(f"sam_model_type must be one of {sorted(sam_model_registry)}")
        sam = sam_model_registry[model_type](checkpoint=str(Path(path).expanduser()))
        self.predictor = SamPredictor(sam.to(device).eval())
        self._key = None

    @torch.no_grad()
    def masks_for_boxes(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rgb = np.ascontiguousarray(_rgb(image))
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


class GDinoSamBackend:
    """``detect(image, phrase)`` with Grounding DINO, ``segment(image, detections)`` with SAM."""

    name = "gdino_sam"

    def __init__(self, gdino: str = DEFAULT_GDINO, sam: str = DEFAULT_SAM, box_threshold: float = 0.3,
                 text_threshold: float = 0.25, nms_iou: float = 0.5, device: str = "auto",
                 sam_model_type: str = "vit_h", batch_size: int = 4):
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
        self.sam = (_PthSam(self.sam_spec, sam_model_type, self.device) if self.sam_spec.endswith(".pth")
                    else _HFSam(self.sam_spec, self.device, self.dtype))

    def id(self) -> dict:
        return {"backend": self.name, "gdino": weights_id(self.gdino_spec), "sam": weights_id(self.sam_spec),
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
