"""CLIP's image tower restated for export: the same maths, less work.

``LeanVisionHead`` computes exactly what ``encoders.VisionHead`` computes
(pixels -> projected, un-normalised image embedding), reusing the loaded
model's own weights, with two changes that only remove work:

* the patch embedding (a convolution whose stride equals its kernel) becomes a
  reshape and a MatMul, so dynamic int8 quantisation covers it too (the fp32
  Conv was 8% of the int8 graph's time at ViT-B/32);
* the query, key and value projections are one MatMul per layer;
* the last encoder layer runs its output projection and MLP on the class
  token alone, the only token the pooled output reads (about 1/15 of the
  encoder's MatMul work saved).

Plain MatMul/Softmax attention keeps the ONNX graph free of fused or
backend-specific ops. The equivalence with the transformers forward is
checked by the tests and, for every version, by the parity check.
"""

from __future__ import annotations

import torch
from torch import nn


class LeanVisionHead(nn.Module):
    """Vision tower + projection of a transformers ``CLIPModel``, for export."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        vision = model.vision_model
        emb = vision.embeddings
        conv = emb.patch_embedding
        if conv.bias is not None or conv.stride != conv.kernel_size:
            raise ValueError("expected CLIP's bias-free, non-overlapping patch conv")
        self.patch = conv.kernel_size[0]
        self.grid = emb.image_size // self.patch
        width, channels = conv.out_channels, conv.in_channels
        # (D, C, p, p) conv kernel as a (C*p*p -> D) linear map.
        self.patch_proj = nn.Linear(channels * self.patch**2, width, bias=False)
        self.patch_proj.weight = nn.Parameter(conv.weight.detach().reshape(width, -1))
        self.channels = channels
        self.class_embedding = emb.class_embedding
        self.position = emb.position_embedding
        self.pre_norm = vision.pre_layrnorm
        self.layers = vision.encoder.layers
        # One (D -> 3D) MatMul per layer instead of three: a bigger GEMM runs
        # closer to the CPU's peak (the last layer needs keys and values only).
        self.qkv = nn.ModuleList(_stacked(layer.self_attn) for layer in self.layers)
        self.post_norm = vision.post_layernorm
        self.visual_projection = model.visual_projection

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        g, p, c = self.grid, self.patch, self.channels
        x = pixel_values.reshape(-1, c, g, p, g, p).permute(0, 2, 4, 1, 3, 5)
        x = self.patch_proj(x.reshape(-1, g * g, c * p * p))
        cls = self.class_embedding.reshape(1, 1, -1).expand(x.shape[0], 1, -1)
        h = self.pre_norm(torch.cat([cls, x], dim=1) + self.position.weight)
        last = len(self.layers) - 1
        for i, (layer, qkv) in enumerate(zip(self.layers, self.qkv, strict=True)):
            h = _layer(layer, qkv, h, cls_only=i == last)
        return self.visual_projection(self.post_norm(h[:, 0]))


def _stacked(attn: nn.Module) -> nn.Linear:
    """q_proj, k_proj and v_proj as one linear map (outputs q | k | v)."""
    parts = (attn.q_proj, attn.k_proj, attn.v_proj)
    d = attn.q_proj.in_features
    fused = nn.Linear(d, 3 * d)
    fused.weight = nn.Parameter(torch.cat([p.weight.detach() for p in parts]))
    fused.bias = nn.Parameter(torch.cat([p.bias.detach() for p in parts]))
    return fused


def _layer(
    layer: nn.Module, qkv: nn.Linear, h: torch.Tensor, *, cls_only: bool
) -> torch.Tensor:
    """One pre-norm encoder layer: every token's output, or the class token's."""
    attn = layer.self_attn
    n, heads, dim = h.shape[0], attn.num_heads, attn.head_dim
    q, k, v = qkv(layer.layer_norm1(h)).split(heads * dim, dim=-1)
    if cls_only:
        h, q = h[:, :1], q[:, :1]

    def split(t: torch.Tensor) -> torch.Tensor:  # (N, T, D) -> (N, H, T, d)
        return t.reshape(n, -1, heads, dim).transpose(1, 2)

    scores = (split(q) * attn.scale) @ split(k).transpose(-1, -2)
    # Softmax in fp32 under bf16/fp16, as transformers does.
    weights = torch.softmax(scores, -1, dtype=torch.float32).to(scores.dtype)
    out = (weights @ split(v)).transpose(1, 2).reshape(n, -1, heads * dim)
    h = h + attn.out_proj(out)
    return h + layer.mlp(layer.layer_norm2(h))
