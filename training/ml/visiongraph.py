"""CLIP's image tower restated for export: the same maths, less work.

``LeanVisionHead`` computes exactly what ``encoders.VisionHead`` computes
(pixels -> projected, un-normalised image embedding) from the loaded model's
weights, with three changes that only remove work:

* the patch embedding (a convolution whose stride equals its kernel) becomes a
  reshape and a MatMul, so dynamic int8 quantisation covers it too (the fp32
  Conv was 8% of the int8 graph's time at ViT-B/32);
* the query, key and value projections are one MatMul per layer (a bigger
  GEMM runs closer to the CPU's peak);
* the last encoder layer runs its output projection and MLP on the class
  token alone, the only token the pooled output reads (about 1/15 of the
  encoder's MatMul work saved).

The patch and q/k/v weights are copies; the rest (norms, MLPs, output
projections, embeddings) is shared with the loaded model, which this module
never changes (backends that convert weights deep-copy it first).

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
        if emb.image_size % self.patch:
            raise ValueError("the image size must be a multiple of the patch size")
        self.grid = emb.image_size // self.patch
        self.channels = conv.in_channels
        # (D, C, p, p) conv kernel as a (C*p*p -> D) linear map.
        self.patch_proj = _linear(conv.weight.reshape(conv.out_channels, -1), None)
        self.class_embedding = emb.class_embedding
        self.position = emb.position_embedding
        self.pre_norm = vision.pre_layrnorm
        self.layers = nn.ModuleList(_LeanLayer(la) for la in vision.encoder.layers)
        self.post_norm = vision.post_layernorm
        self.visual_projection = model.visual_projection

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        g, p, c = self.grid, self.patch, self.channels
        if tuple(pixel_values.shape[1:]) != (c, g * p, g * p):
            raise ValueError(
                f"expected pixels shaped (N, {c}, {g * p}, {g * p}), "
                f"got {tuple(pixel_values.shape)}"
            )
        x = pixel_values.reshape(-1, c, g, p, g, p).permute(0, 2, 4, 1, 3, 5)
        x = self.patch_proj(x.reshape(-1, g * g, c * p * p))
        cls = self.class_embedding.reshape(1, 1, -1).expand(x.shape[0], 1, -1)
        h = self.pre_norm(torch.cat([cls, x], dim=1) + self.position.weight)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            h = layer(h, cls_only=i == last)
        return self.visual_projection(self.post_norm(h[:, 0]))


class _LeanLayer(nn.Module):
    """One pre-norm encoder layer with its q/k/v projections stacked."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        attn = layer.self_attn
        self.heads, self.head_dim = attn.num_heads, attn.head_dim
        self.scale = attn.scale
        parts = (attn.q_proj, attn.k_proj, attn.v_proj)
        self.qkv = _linear(
            torch.cat([p.weight for p in parts]), torch.cat([p.bias for p in parts])
        )
        self.norm1, self.norm2 = layer.layer_norm1, layer.layer_norm2
        self.out_proj, self.mlp = attn.out_proj, layer.mlp

    def forward(self, h: torch.Tensor, *, cls_only: bool) -> torch.Tensor:
        """Every token's output, or (``cls_only``) the class token's alone."""
        n, heads, dim = h.shape[0], self.heads, self.head_dim
        q, k, v = self.qkv(self.norm1(h)).split(heads * dim, dim=-1)
        if cls_only:
            h, q = h[:, :1], q[:, :1]

        def split(t: torch.Tensor) -> torch.Tensor:  # (N, T, D) -> (N, H, T, d)
            return t.reshape(n, -1, heads, dim).transpose(1, 2)

        scores = (split(q) * self.scale) @ split(k).transpose(-1, -2)
        # Softmax in fp32 under bf16/fp16, as transformers does.
        weights = torch.softmax(scores, -1, dtype=torch.float32).to(scores.dtype)
        out = (weights @ split(v)).transpose(1, 2).reshape(n, -1, heads * dim)
        h = h + self.out_proj(out)
        return h + self.mlp(self.norm2(h))


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """An ``nn.Linear`` holding copies of ``weight`` (out, in) and ``bias``."""
    out_features, in_features = weight.shape
    layer = nn.Linear(in_features, out_features, bias=bias is not None, device="meta")
    layer.weight = nn.Parameter(weight.detach().clone())
    if bias is not None:
        layer.bias = nn.Parameter(bias.detach().clone())
    return layer
