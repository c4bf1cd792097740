"""A static student (``encoder.student.kind: static``): no transformer at encode time.

Each token of the teacher's vocabulary gets one vector and one weight; an item's vector is
the weighted mean of its tokens' vectors (padding left out) through a linear head, L2
normalised. It takes the teacher's ``input_ids``/``attention_mask`` and exports to ONNX as a
few gathers and one matrix product, so the published ``encoder/`` and cold start serve it
like any other encoder.

Start: every token that occurs in the item texts gets the teacher's vector of that token
alone (``[CLS] token [SEP]``, one short forward pass per token); the rest of the vocabulary
(tokens only a cold-start item may bring) gets a ridge map from the teacher's input
embeddings onto those vectors. Training (embedders/distill.py) then fits the vectors, the
weights (all start at 1: a plain mean) and the head to the teacher's item vectors, with
sparse Adam on the two tables. Distilling a sentence encoder into static token vectors is
the idea of Model2Vec; the sample-trained weights and head are xemb's.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from xemb.embedders.encode import PooledTextEncoding, TextEncoder
from xemb.settings.offline import EncoderConfig

__all__ = ["StaticPooler", "StaticStudentEncoder", "token_vectors"]

TOKEN_BATCH = 512


class StaticPooler(torch.nn.Module):
    """Weighted mean of per-token vectors -> linear head -> L2 norm."""

    def __init__(self, vectors: torch.Tensor, target: int) -> None:
        super().__init__()
        vocab, width = vectors.shape
        self.table = torch.nn.Embedding(vocab, width, sparse=True)
        self.log_weight = torch.nn.Embedding(vocab, 1, sparse=True)
        self.head = torch.nn.Linear(width, target)
        with torch.no_grad():
            self.table.weight.copy_(vectors)
            self.log_weight.weight.zero_()
            if width == target:
                self.head.weight.copy_(torch.eye(width))
            self.head.bias.zero_()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        w = self.log_weight(input_ids).squeeze(-1).exp() * attention_mask.to(torch.float32)
        x = (self.table(input_ids) * w.unsqueeze(-1)).sum(1)
        x = x / w.sum(1, keepdim=True).clamp(min=1e-9)
        return F.normalize(self.head(x), dim=-1)

    def optimizers(self, lr: float) -> list[torch.optim.Optimizer]:
        """Sparse Adam on the tables (a step touches only the batch's tokens), Adam on the
        head."""
        return [torch.optim.SparseAdam([self.table.weight, self.log_weight.weight], lr=lr),
                torch.optim.Adam(self.head.parameters(), lr=lr)]


def _used_tokens(teacher: TextEncoder, texts: list[str]) -> np.ndarray:
    """Token ids that occur in ``texts`` (special tokens included), sorted."""
    used: set[int] = set()
    for b in range(0, len(texts), 4096):
        for ids in teacher.tokenize(texts[b:b + 4096])["input_ids"].tolist():
            used.update(ids)
    return np.array(sorted(used), np.int64)


@torch.inference_mode()
def token_vectors(teacher: TextEncoder, texts: list[str],
                  log: Callable[[str], None] = print, ridge: float = 1.0) -> torch.Tensor:
    """[vocab, dim] start of the table: the teacher's vector of each token of ``texts`` on
    its own; the other tokens through a ridge map from the teacher's input embeddings."""
    model = teacher.module.model
    embeddings = model.get_input_embeddings().weight.detach().float().cpu()
    vocab = embeddings.shape[0]
    used = _used_tokens(teacher, texts)
    tok = teacher.tokenizer
    cls, sep = tok.cls_token_id, tok.sep_token_id
    out = torch.zeros(vocab, teacher.dim)
    batches = range(0, len(used), TOKEN_BATCH)
    for b in tqdm(batches, desc="distill: token vectors", unit="batch",
                  disable=len(batches) < 2):
        ids = torch.from_numpy(used[b:b + TOKEN_BATCH]).unsqueeze(1)
        if cls is not None and sep is not None:
            ids = torch.cat([torch.full_like(ids, cls), ids, torch.full_like(ids, sep)], 1)
        feeds = {"input_ids": ids.to(teacher.device),
                 "attention_mask": torch.ones_like(ids).to(teacher.device)}
        out[used[b:b + TOKEN_BATCH]] = teacher.module(**feeds).float().cpu()
    rest = np.setdiff1d(np.arange(vocab), used)
    if len(rest):
        x, y = embeddings[used].double(), out[used].double()
        eye = torch.eye(x.shape[1], dtype=x.dtype)
        w = torch.linalg.solve(x.T @ x + ridge * eye, x.T @ y)
        out[rest] = F.normalize((embeddings[rest].double() @ w).float(), dim=-1)
    log(f"distill: token vectors: {len(used)} tokens of the item texts from the teacher, "
        f"{len(rest)} others mapped from its input embeddings")
    return out


class StaticStudentEncoder(PooledTextEncoding):
    """The static student with a ``TextEncoder``'s interface (tokenize, module, encode): the
    teacher's tokenizer in front of a :class:`StaticPooler`."""

    progress = "encode (student)"
    module: StaticPooler

    def __init__(self, cfg: EncoderConfig, teacher: TextEncoder, texts: list[str],
                 log: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self.path = teacher.path
        self.tokenizer = teacher.tokenizer
        self.dim = teacher.dim
        self.layers = 0
        self.module = StaticPooler(token_vectors(teacher, texts, log), teacher.dim).eval()
        self.fingerprint = ""  # set once trained (it depends on the training data)
