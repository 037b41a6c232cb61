"""LightGCN propagation as a PyG ``MessagePassing`` module, with the fused CSR kernel as its fast path.

:class:`LightGCNConv` computes LightGCN's layer combination ``sum_k alpha_k A_hat^k x`` (or the
layers themselves). It takes what PyG convolutions take:

- ``edge_index`` ``[2, E]`` (+ optional ``edge_weight``): ``K`` rounds of PyG message passing,
  exactly :class:`torch_geometric.nn.conv.LGConv` (``gcn_norm`` without self-loops when
  ``normalize``; messages ``w_ij x_j``, summed). This path runs on sampled subgraphs too.
- a ``torch.sparse_csr`` adjacency that is already normalised and symmetric
  (:meth:`recsys.graph.GraphArrays.to_torch`): the fast path, :func:`recsys.graph.propagate_combined`
  (Horner's scheme in one autograd function, backward = the same polynomial of the symmetric ``A``;
  each layer one fused pass of the C++ kernel ``recsys.graph.csr_spmm``, and with ``rows`` only the
  nodes a batch reads are computed in the last layer).
  ``LGConv(normalize=False)`` given the same CSR computes the same numbers, slower: its backward
  goes through torch's sparse ``mm``, which transposes the CSR every call (docs/gnn.md).

Values and gradients of both paths equal ``LGConv``'s and PyG's ``LightGCN`` model's
(``tests/recsys/models/test_lightgcn_conv.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.typing import Adj, OptTensor
from torch_geometric.utils import spmm

from recsys.graph import propagate, propagate_combined


class LightGCNConv(MessagePassing):
    """``K = len(alphas) - 1`` LightGCN layers combined with weights ``alphas`` (PyG module).

    Args:
        alphas (Sequence[float]): Layer weights ``alpha_0 .. alpha_K`` (LightGCN: ``1 / (K + 1)``).
        normalize (bool): On the ``edge_index`` path, normalise by ``gcn_norm`` (symmetric, no self
            loops) as ``LGConv`` does. The CSR fast path takes an already-normalised matrix.
            (default: True)
    """

    def __init__(self, alphas: Sequence[float], normalize: bool = True) -> None:
        super().__init__(aggr="add")
        if len(alphas) == 0:
            raise ValueError("alphas needs at least alpha_0")
        self.alphas = tuple(float(a) for a in alphas)
        self.normalize = normalize

    @property
    def num_layers(self) -> int:
        return len(self.alphas) - 1

    def forward(self, x: Tensor, edge_index: Adj, edge_weight: OptTensor = None, combine: bool = True,
                rows: OptTensor = None) -> Tensor | list[Tensor]:
        """The combination ``sum_k alpha_k E^(k)`` (``combine``) or the layers ``[E^(0), ..., E^(K)]``.

        Args:
            x (Tensor): ``[num_nodes, dim]`` layer-0 embeddings.
            edge_index (Adj): ``[2, E]`` edges (both directions of an undirected graph), or the
                normalised symmetric ``torch.sparse_csr`` adjacency (fast path).
            edge_weight (Tensor, optional): ``[E]`` weights of ``edge_index``'s edges.
            combine (bool): Return the combination rather than the layers. (default: True)
            rows (Tensor, optional): ``[m]`` nodes: return only their rows of the combination. On
                the CSR fast path the last layer is computed for them alone, and the backward's
                first product reads only their gradient. (default: None: every node)
        """
        if rows is not None and not combine:
            raise ValueError("rows selects rows of the combination: it needs combine=True")
        if isinstance(edge_index, Tensor) and edge_index.layout == torch.sparse_csr:
            if edge_weight is not None:
                raise ValueError("a CSR adjacency carries its own weights: pass edge_weight=None")
            if combine:
                return propagate_combined(edge_index, x, self.alphas, rows)
            return propagate(edge_index, x, self.num_layers)
        if self.normalize:
            edge_index, edge_weight = gcn_norm(edge_index, edge_weight, x.size(self.node_dim), add_self_loops=False,
                                               flow=self.flow, dtype=x.dtype)
        layers = [x]
        for _ in range(self.num_layers):
            layers.append(self.propagate(edge_index, x=layers[-1], edge_weight=edge_weight))
        if not combine:
            return layers
        out = layers[0] * self.alphas[0]
        for alpha, layer in zip(self.alphas[1:], layers[1:]):
            out = out + layer * alpha
        return out if rows is None else out[rows]

    def message(self, x_j: Tensor, edge_weight: OptTensor) -> Tensor:
        return x_j if edge_weight is None else edge_weight.view(-1, 1) * x_j

    def message_and_aggregate(self, adj_t: Adj, x: Tensor) -> Tensor:
        return spmm(adj_t, x, reduce=self.aggr)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(layers={self.num_layers}, alphas={self.alphas})"
