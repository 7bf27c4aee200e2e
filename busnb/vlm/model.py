"""DuSSS's vision-language model: image encoder, text encoder, Gaussian heads, momentum copies.

Pan, Qiao, Lou, Ji, Li, "Dual Semantic Similarity-Supervised Vision-Language Model for Semi-Supervised Medical
Image Segmentation" (DuSSS). The release uses a ViT-B/16 (DeiT) and a clinical BERT; here, without pretrained
weights:

* **image encoder**: the U-Net's ResNet encoder (smp, from scratch) of the profile; its stride-8 feature map,
  projected by a 1x1 conv to ``dim``, is the *local* (patch) embedding; the mean of the projected stride-32
  map the *global* embedding. A text-conditioned activation map is the cosine between a text embedding and
  every local embedding (:meth:`VLM.activation`).
* **text encoder** (:class:`TextEncoder`), one of

  - ``"scratch"`` (offline default): a tiny BERT (``transformers.BertModel``, random init) with a word-level
    tokenizer over :data:`busnb.vlm.texts.VOCAB`, built offline with the ``tokenizers`` library, trained
    jointly during pretraining;
  - any transformers text model via ``from_pretrained(local folder or hub id)`` (e.g. a clinical BERT copied
    here); a missing one raises :class:`ModelNotFound` saying what to download and where.

  Sentence embedding = mean of the token states (attention mask), projected to ``dim``.
* **Gaussian heads** (for SSS): each embedding e also gets sigma = softplus(W e) (per dimension), so an image
  or a sentence is N(mu = normalised e, diag(sigma^2)).
* **momentum encoders** (``*_m``): EMA copies (m = 0.995) of the encoders and heads, never optimised.

Every text the model will ever read is known in advance (the candidate sentences and the lesion phrases):
they are tokenised once into a fixed ``(n, length)`` id table, so a batch of texts is an index into it.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .texts import SPECIAL, VOCAB


class ModelNotFound(FileNotFoundError):
    """A text model is not on disk and cannot be fetched here (a user error: the CLI prints one line)."""


def word_tokenizer(vocab=VOCAB, max_length: int = 24):
    """A transformers fast tokenizer over a fixed word list, built offline with ``tokenizers``: lower case,
    whitespace/punctuation split, ``[CLS] ... [SEP]``, unknown words -> ``[UNK]``."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    ids = {t: i for i, t in enumerate([*SPECIAL, *vocab])}
    tok = Tokenizer(WordLevel(ids, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[
        ("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", model_max_length=max_length)


def tiny_bert(vocab_size: int, hidden: int = 64, layers: int = 2, heads: int = 2, max_length: int = 32):
    """A small random-init ``BertModel`` (the text encoder trained here, and the tests' tiny model)."""
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=2 * hidden, max_position_embeddings=max_length, hidden_dropout_prob=0.1,
                     attention_probs_dropout_prob=0.1)
    return BertModel(cfg)


def _looks_local(spec: str) -> bool:
    return Path(spec).expanduser().exists() or spec.startswith((".", "/", "~")) or spec.count("/") > 1


def load_text_model(spec: str):
    """(model, tokenizer) of a transformers text model: a local folder (``save_pretrained`` output) or a hub id
    found in the local Hugging Face cache. Nothing is downloaded when ``HF_HUB_OFFLINE=1``."""
    from transformers import AutoModel, AutoTokenizer

    spec = str(spec)
    local = Path(spec).expanduser()
    name = local.name if _looks_local(spec) else spec.split("/")[-1]
    fix = (f"Fix: on a machine with internet run `huggingface-cli download {spec if not _looks_local(spec) else '<org/model>'} "
           f"--local-dir weights/{name}`, copy that folder here and pass text='weights/{name}' (a folder with "
           "config.json, the weights and the tokenizer files), or use text='scratch' (the small text encoder "
           "trained here, no download).")
    if _looks_local(spec) and not local.exists():
        raise ModelNotFound(f"text model '{spec}': no such folder. {fix}")
    try:
        path = str(local) if _looks_local(spec) else spec
        return AutoModel.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, EnvironmentError) as e:
        raise ModelNotFound(f"text model '{spec}' is not available offline ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:200]}). {fix}") from e


class TextEncoder(nn.Module):
    """Token states of a transformers encoder -> masked mean -> linear to ``dim`` (sentence embedding)."""

    def __init__(self, text: str = "scratch", dim: int = 64, hidden: int = 64, layers: int = 2):
        super().__init__()
        if text == "scratch":
            self.tokenizer = word_tokenizer()
            self.backbone = tiny_bert(len(self.tokenizer), hidden, layers)
        else:
            self.backbone, self.tokenizer = load_text_model(text)
        width = self.backbone.config.hidden_size
        self.proj = nn.Linear(width, dim)

    def tokenize(self, texts: list[str], max_length: int = 24) -> dict:
        t = self.tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_length,
                           return_tensors="pt")
        return {"input_ids": t["input_ids"], "attention_mask": t["attention_mask"]}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return self.proj((h * m).sum(1) / m.sum(1).clamp_min(1.0))


class ImageEncoder(nn.Module):
    """The U-Net's (smp) ResNet encoder: local = 1x1-projected stride-8 map, global = mean of the projected
    deepest map."""

    def __init__(self, encoder: str = "resnet18", dim: int = 64, local_stage: int = 3, depth: int = 5):
        super().__init__()
        import segmentation_models_pytorch as smp

        from ..models import drop_unused_stages

        self.encoder = smp.encoders.get_encoder(encoder, in_channels=1, depth=depth, weights=None)
        drop_unused_stages(self.encoder, depth)
        ch = self.encoder.out_channels
        self.local_stage = min(local_stage, depth)
        self.local = nn.Conv2d(ch[self.local_stage], dim, 1)
        self.glob = nn.Linear(ch[-1], dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.encoder(x)
        return self.glob(feats[-1].mean((2, 3))), self.local(feats[self.local_stage])


class GaussianHead(nn.Module):
    """sigma = softplus(W e + b) + 1e-4 per dimension: the spread of the embedding's Gaussian."""

    def __init__(self, dim: int):
        super().__init__()
        self.lin = nn.Linear(dim, dim)
        nn.init.zeros_(self.lin.weight)
        nn.init.constant_(self.lin.bias, -2.0)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return F.softplus(self.lin(e)) + 1e-4


class VLM(nn.Module):
    """Image and text encoders with Gaussian heads and their momentum (EMA) copies."""

    def __init__(self, encoder: str = "resnet18", text: str = "scratch", dim: int = 64, text_hidden: int = 64,
                 text_layers: int = 2, momentum: float = 0.995, temperature: float = 0.07, depth: int = 5):
        super().__init__()
        self.params = dict(encoder=encoder, text=text, dim=dim, text_hidden=text_hidden, text_layers=text_layers,
                           momentum=momentum, temperature=temperature, depth=depth)
        self.image = ImageEncoder(encoder, dim, depth=depth)
        self.text = TextEncoder(text, dim, text_hidden, text_layers)
        self.image_sigma, self.text_sigma = GaussianHead(dim), GaussianHead(dim)
        self.online = nn.ModuleList([self.image, self.text, self.image_sigma, self.text_sigma])
        self.momentum_copy = copy.deepcopy(self.online).requires_grad_(False)
        self.m, self.T = momentum, temperature
        # Platt calibration of the activation map (a, b) and the foreground base rate pi, fitted after
        # pretraining on the LABELED train images' masks (busnb.vlm.refine.calibrate); identity until then
        self.register_buffer("calib", torch.tensor([1.0, 0.0, 0.5]))

    @classmethod
    def from_params(cls, params: dict) -> "VLM":
        keys = ("encoder", "text", "dim", "text_hidden", "text_layers", "momentum", "temperature", "depth")
        return cls(**{k: params[k] for k in keys if k in params})

    def trainable(self):
        return [p for p in self.online.parameters() if p.requires_grad]

    @torch.no_grad()
    def momentum_update(self) -> None:
        """theta_m <- m theta_m + (1 - m) theta (DuSSS / MoCo momentum encoders, m = 0.995); buffers copied."""
        momentum_update(self.momentum_copy, self.online, self.m)

    def train(self, mode: bool = True):
        super().train(mode)
        self.momentum_copy.eval()
        return self

    def encode_image(self, x, momentum: bool = False) -> dict:
        """{"g": global embedding (B,D) L2-normalised, "local": patch map (B,D,h,w) L2-normalised over D,
        "sigma": (B,D)}."""
        img, sig = (self.momentum_copy[0], self.momentum_copy[2]) if momentum else (self.image, self.image_sigma)
        g, loc = img(x)
        return {"g": F.normalize(g, dim=-1), "local": F.normalize(loc, dim=1), "sigma": sig(g)}

    def encode_text(self, ids, mask, momentum: bool = False) -> dict:
        """{"g": sentence embedding (B,D) L2-normalised, "sigma": (B,D)}."""
        txt, sig = (self.momentum_copy[1], self.momentum_copy[3]) if momentum else (self.text, self.text_sigma)
        e = txt(ids, mask)
        return {"g": F.normalize(e, dim=-1), "sigma": sig(e)}

    def activation(self, x: torch.Tensor, text_g: torch.Tensor) -> torch.Tensor:
        """Text-conditioned activation map: cosine between each text embedding (K,D) and every local embedding,
        averaged over the K texts, upsampled bilinearly to the image: (B,1,H,W) in [-1, 1]."""
        loc = self.encode_image(x)["local"]
        cos = torch.einsum("bdhw,kd->bkhw", loc, text_g).mean(1, keepdim=True)
        return F.interpolate(cos, size=x.shape[-2:], mode="bilinear", align_corners=False)


    def map_prob(self, x: torch.Tensor, text_g: torch.Tensor) -> torch.Tensor:
        """Foreground probability from the text map: sigmoid(a z + b), z = the activation map standardised
        per image (mean 0, sd 1 over its pixels), (a, b) = :attr:`calib`."""
        cos = self.activation(x, text_g)
        flat = cos.flatten(1)
        z = (cos - flat.mean(1).view(-1, 1, 1, 1)) / (flat.std(1).view(-1, 1, 1, 1) + 1e-6)
        return torch.sigmoid(self.calib[0] * z + self.calib[1])


@torch.no_grad()
def momentum_update(target: nn.Module, source: nn.Module, m: float) -> None:
    """theta_target <- m theta_target + (1 - m) theta_source; buffers copied."""
    tp, sp = list(target.parameters()), [p.detach() for p in source.parameters()]
    torch._foreach_mul_(tp, m)
    torch._foreach_add_(tp, sp, alpha=1 - m)
    tb, sb = list(target.buffers()), list(source.buffers())
    if tb:
        torch._foreach_copy_(tb, sb)
