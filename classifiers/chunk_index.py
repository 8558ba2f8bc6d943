"""One FAISS index over every active target's chunk vectors, whose search cost stays flat as targets grow.

Below ``exact_max`` vectors the index is exact (inner product over all of them: under a millisecond at 20,000 x 384
on one core). Past it the vectors move to an inverted-file index (``IndexIVFFlat``): k-means cells over the vectors
themselves, a query scanning ``nprobe`` cells, so 1,000 targets x 200 chunks cost about what 100 targets did. Both
kinds take targets in and out by id range without touching the others'; the cells are trained again only when the
collection has grown fourfold since they were, so a registration costs an add, not a rebuild.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import faiss
import numpy as np

# a vector's id: its target's slot in the high bits, its row in the low ones
_ROW_BITS = 32


class ChunkIndex:
    def __init__(self, dim: int, exact_max: int = 20_000, nprobe: int = 16) -> None:
        self.dim = dim
        self.exact_max = exact_max
        self.nprobe = nprobe
        self.index: faiss.Index = self._exact()
        self.trained_on = 0  # vectors the IVF cells were trained on; 0 while exact
        self.slots: dict[str, int] = {}  # target id -> slot
        self.owners: dict[int, str] = {}  # slot -> target id
        self.sizes: dict[str, int] = {}
        self._next_slot = 0

    def _exact(self) -> faiss.Index:
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def kind(self) -> str:
        return "ivf" if self.trained_on else "exact"

    def _add(self, index: faiss.Index, target_id: str, vectors: np.ndarray) -> None:
        slot = self.slots.get(target_id)
        if slot is None:
            slot = self.slots[target_id] = self._next_slot
            self.owners[slot] = target_id
            self._next_slot += 1
        ids = (np.int64(slot) << _ROW_BITS) + np.arange(len(vectors), dtype=np.int64)
        index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)
        self.sizes[target_id] = len(vectors)

    def remove(self, target_id: str) -> None:
        slot = self.slots.pop(target_id, None)
        if slot is None:
            return
        self.index.remove_ids(faiss.IDSelectorRange(slot << _ROW_BITS, (slot + 1) << _ROW_BITS))
        del self.owners[slot]
        del self.sizes[target_id]

    def sync(self, wanted: dict[str, str], load: Callable[[str], np.ndarray], versions: dict[str, str]) -> None:
        """Make the index hold exactly ``wanted`` (target id -> artifact digest), loading only what changed.

        ``versions`` is the caller's record of which digest each indexed target was added with; it is updated here.
        """
        for target_id in [t for t in self.slots if wanted.get(t) != versions.get(t)]:
            self.remove(target_id)
            versions.pop(target_id, None)
        new = {t: d for t, d in wanted.items() if t not in self.slots}
        blocks = {t: load(d) for t, d in new.items()}
        total = self.ntotal + sum(len(b) for b in blocks.values())
        if (not self.trained_on and total > self.exact_max) or (self.trained_on and total > 4 * self.trained_on):
            self._retrain(wanted, blocks, load)
        else:
            for target_id, block in blocks.items():
                self._add(self.index, target_id, block)
        versions.update({t: wanted[t] for t in blocks})

    def _retrain(self, wanted: dict[str, str], blocks: dict[str, np.ndarray],
                 load: Callable[[str], np.ndarray]) -> None:
        every = {t: blocks[t] if t in blocks else load(d) for t, d in wanted.items()}
        matrix = np.concatenate(list(every.values())).astype(np.float32)
        cells = int(min(4096, max(64, 4 * math.sqrt(len(matrix)))))
        quantizer = faiss.IndexFlatIP(self.dim)
        index = faiss.IndexIVFFlat(quantizer, self.dim, cells, faiss.METRIC_INNER_PRODUCT)
        index.cp.max_points_per_centroid = 64  # k-means on a sample: seconds, not minutes, at 200k vectors
        index.cp.niter = 10
        index.train(matrix)
        index.nprobe = self.nprobe
        self.index, self.trained_on = index, len(matrix)
        self.slots, self.owners, self.sizes, self._next_slot = {}, {}, {}, 0
        for target_id, block in every.items():
            self._add(index, target_id, block)

    def search(self, vectors: np.ndarray, k: int) -> list[dict[str, float]]:
        """Per query, each target among the ``k`` nearest chunks with its best cosine."""
        if not self.ntotal:
            return [{} for _ in range(len(vectors))]
        sims, ids = self.index.search(np.ascontiguousarray(vectors, dtype=np.float32), min(k, self.ntotal))
        out: list[dict[str, float]] = []
        for row_sims, row_ids in zip(sims, ids, strict=True):
            best: dict[str, float] = {}
            for sim, vid in zip(row_sims.tolist(), (row_ids >> _ROW_BITS).tolist(), strict=True):
                if vid < 0:
                    continue
                owner = self.owners.get(vid)
                if owner is not None and sim > best.get(owner, -2.0):
                    best[owner] = sim
            out.append(best)
        return out
