"""The compact (int8) item matrix of the approximate scan, and the user quantisation that matches it.

:func:`quantize_items` builds a :class:`CompactItems` once per model; the C++ op scans its packed
codes, :func:`recsys.topk.reference.score_topk_compact_torch` its row-major codes with the users
quantised by :func:`quantize_users` (the same fp32 operations as the kernel, so both agree bit for bit).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recsys.topk.inputs import as_float_matrix

# The int8 scan works on blocks of this many items (one AVX-512 register of int32 lanes).
PACK_LANES = 16


@dataclass(frozen=True)
class CompactItems:
    """An int8 copy of an item matrix for a fast candidate scan, plus the fp32 rows to re-rank.

    Args:
        codes (torch.Tensor): ``int8 [n_items, dim]``, ``codes[i] * scales[i] ~= items[i]``.
        scales (torch.Tensor): ``float32 [n_items]``, per-row scale (``max |items[i]| / 127``).
        items (torch.Tensor): ``float32 [n_items, dim]``, the exact rows used for the re-rank.
        packed (torch.Tensor): ``uint8 [ceil(n_items / 16), ceil(dim / 4), 16, 4]``, the codes laid
            out for the VNNI dot product of the C++ op: ``packed[b, g, l, c] = codes[16 b + l, 4 g + c]
            + 128`` (zero codes pad the last block and group). Built by :func:`quantize_items`.
    """

    codes: torch.Tensor
    scales: torch.Tensor
    items: torch.Tensor
    packed: torch.Tensor

    @property
    def nbytes(self) -> int:
        """Bytes the int8 scan reads (packed codes and scales)."""
        return self.packed.numel() + self.scales.numel() * 4


def pack_codes(codes: torch.Tensor) -> torch.Tensor:
    """``int8 [n, d]`` codes to the ``uint8 [ceil(n/16), ceil(d/4), 16, 4]`` layout of :class:`CompactItems`."""
    n, d = codes.shape
    blocks, groups = -(-n // PACK_LANES), -(-d // 4)
    padded = torch.zeros((blocks * PACK_LANES, groups * 4), dtype=torch.int16)
    padded[:n, :d] = codes.to(torch.int16)
    shifted = (padded + 128).to(torch.uint8)
    return shifted.view(blocks, PACK_LANES, groups, 4).permute(0, 2, 1, 3).contiguous()


def quantize_items(item_matrix: torch.Tensor | np.ndarray) -> CompactItems:
    """Symmetric per-row int8 quantisation of ``item_matrix`` (``[n_items, dim]``, any float)."""
    items = as_float_matrix(item_matrix, "item_matrix")
    max_abs = items.abs().amax(dim=1) if items.shape[1] > 0 else items.new_zeros(items.shape[0])
    scales = torch.where(max_abs > 0, max_abs / 127.0, torch.ones_like(max_abs))
    codes = torch.round(items / scales[:, None]).clamp_(-127, 127).to(torch.int8).contiguous()
    return CompactItems(codes=codes, scales=scales.contiguous(), items=items, packed=pack_codes(codes))


def quantize_users(user_vectors: torch.Tensor) -> torch.Tensor:
    """Per-row symmetric int8 quantisation of users as the compact op does it, as float32 integers.

    ``round(u * (127 / max|u|))`` (a zero row stays zero): the same fp32 operations as the C++
    kernel, so the twin's approximate scores are bit-identical to the op's.
    """
    max_abs = user_vectors.abs().amax(dim=1, keepdim=True)
    # A true division (``127.0 / tensor`` would be a reciprocal times 127, rounded differently).
    inv = torch.where(max_abs > 0, torch.full_like(max_abs, 127.0) / max_abs, torch.zeros_like(max_abs))
    return torch.round(user_vectors * inv).clamp_(-127, 127)
