"""Tiny random-init Grounding DINO and SAM, saved with ``save_pretrained``, for tests and offline code-path checks.

Their outputs are meaningless (random weights); they exist so the real loading and inference
code (``from_pretrained(local_dir)``, processors, post-processing, SAM embeddings) runs here,
where no pretrained weights can be downloaded. The tokenizer is a ``BertTokenizer`` over a small
vocabulary that keeps the ids Grounding DINO hard-codes: [PAD]=0, [CLS]=101, [SEP]=102, '.'=1012.
"""
from __future__ import annotations

from pathlib import Path

WORDS = ("dark", "bright", "oval", "round", "lobulated", "irregular", "tumor", "breast", "lesion",
         "hypoechoic", "mass", "nodule", "spiculated", "circumscribed", "black", "gray")


def write_vocab(path: Path) -> Path:
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(1, 100)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += [f"[unused{i}]" for i in range(104, 1012)] + ["."] + list(WORDS)
    path.write_text("\n".join(vocab) + "\n")
    return path


def build_tiny_gdino(out: str | Path, seed: int = 0) -> Path:
    import torch
    from transformers import (BertConfig, BertTokenizer, GroundingDinoConfig, GroundingDinoForObjectDetection,
                              GroundingDinoImageProcessor, GroundingDinoProcessor, SwinConfig)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = BertTokenizer(str(write_vocab(out / "vocab.txt")))
    backbone = SwinConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=4,
                          out_features=["stage2", "stage3", "stage4"])
    text = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32)
    cfg = GroundingDinoConfig(backbone_config=backbone, text_config=text, d_model=32, encoder_layers=1,
                              decoder_layers=2, encoder_ffn_dim=32, decoder_ffn_dim=32, encoder_attention_heads=2,
                              decoder_attention_heads=2, num_queries=30, max_text_len=32, encoder_n_points=2,
                              decoder_n_points=2)
    torch.manual_seed(seed)
    GroundingDinoForObjectDetection(cfg).save_pretrained(out)
    ip = GroundingDinoImageProcessor(size={"shortest_edge": 128, "longest_edge": 160})
    GroundingDinoProcessor(image_processor=ip, tokenizer=tok).save_pretrained(out)
    return out


def build_tiny_sam(out: str | Path, seed: int = 0) -> Path:
    import torch
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor
    from transformers.models.sam.configuration_sam import (SamMaskDecoderConfig, SamPromptEncoderConfig,
                                                           SamVisionConfig)

    out = Path(out)
    vc = SamVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=128, patch_size=16,
                         output_channels=32, mlp_dim=64, global_attn_indexes=[1], window_size=4, num_pos_feats=16)
    pc = SamPromptEncoderConfig(hidden_size=32, image_size=128, patch_size=16, mask_input_channels=4)
    mc = SamMaskDecoderConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_dim=64,
                              iou_head_hidden_dim=32)
    torch.manual_seed(seed)
    SamModel(SamConfig(vision_config=vc, prompt_encoder_config=pc, mask_decoder_config=mc)).save_pretrained(out)
    ip = SamImageProcessor(size={"longest_edge": 128}, pad_size={"height": 128, "width": 128},
                           mask_size={"longest_edge": 32}, mask_pad_size={"height": 32, "width": 32})
    SamProcessor(image_processor=ip).save_pretrained(out)
    return out


def build_tiny_sam2(out: str | Path, seed: int = 0) -> Path:
    """A random-init SAM 2 (Hiera backbone, 128 px) saved with its processor: for testing the loading and
    prompting code offline. Its masks mean nothing."""
    import torch
    from transformers import Sam2Config, Sam2ImageProcessor, Sam2Model, Sam2Processor
    from transformers.models.sam2.configuration_sam2 import (Sam2HieraDetConfig, Sam2MaskDecoderConfig,
                                                             Sam2PromptEncoderConfig, Sam2VisionConfig)

    out = Path(out)
    bb = Sam2HieraDetConfig(hidden_size=16, num_attention_heads=1, image_size=[128, 128],
                            blocks_per_stage=[1, 1, 2, 1], embed_dim_per_stage=[16, 32, 64, 128],
                            num_attention_heads_per_stage=[1, 1, 1, 1], window_size_per_stage=[4, 4, 4, 4],
                            global_attention_blocks=[3], window_positional_embedding_background_size=[4, 4])
    vc = Sam2VisionConfig(backbone_config=bb, backbone_channel_list=[128, 64, 32, 16],
                          backbone_feature_sizes=[[32, 32], [16, 16], [8, 8]], fpn_hidden_size=32)
    pc = Sam2PromptEncoderConfig(hidden_size=32, image_size=128, patch_size=16, mask_input_channels=4)
    mc = Sam2MaskDecoderConfig(hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32)
    torch.manual_seed(seed)
    Sam2Model(Sam2Config(vision_config=vc, prompt_encoder_config=pc, mask_decoder_config=mc)).save_pretrained(out)
    ip = Sam2ImageProcessor(size={"height": 128, "width": 128}, mask_size={"height": 32, "width": 32})
    Sam2Processor(image_processor=ip).save_pretrained(out)
    return out
