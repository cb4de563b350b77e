"""The compiled selection every ranking goes through, against a plain sort."""

from __future__ import annotations

import numpy as np
import pytest

from stream_rec.models._kernels import select_dense, select_sparse


def _reference(vals: np.ndarray, items: np.ndarray, k: int) -> list[int]:
    """Best first, ties to the lower index: the order every list in the project uses."""
    return sorted(items.tolist(), key=lambda i: (-vals[i], i))[:k]


@pytest.mark.parametrize("n", [5, 300, 1683, 5000])
@pytest.mark.parametrize("k", [1, 20, 100])
def test_select_matches_a_full_sort_with_ties_and_exclusions(n: int, k: int) -> None:
    rng = np.random.default_rng(n * 1000 + k)
    for kind in ("distinct", "ties", "all equal", "float32"):
        vals = rng.standard_normal(n)
        if kind == "ties":  # few distinct values: most of the work is breaking ties by index
            vals = np.round(vals, 1)
        elif kind == "all equal":  # every candidate reaches any threshold
            vals = np.zeros(n)
        elif kind == "float32":  # matrix factorisation's scores
            vals = vals.astype(np.float32)
        seen = rng.random(n) < 0.9
        excluded = rng.random(n) < 0.2
        eligible = np.flatnonzero(seen & ~excluded)
        buf_s, buf_i = np.empty(n), np.empty(n, np.int64)
        out_s, out_i = np.empty(k), np.empty(k, np.int64)
        m = select_dense(vals, seen, excluded, n, k, buf_s, buf_i, out_s, out_i)
        assert out_i[:m].tolist() == _reference(vals, eligible, k)
        np.testing.assert_array_equal(out_s[:m], vals[out_i[:m]])
        # The sparse variant over a shuffled candidate list (with ineligible ones mixed in).
        cand = rng.permutation(n)[: max(1, n // 2)]
        m = select_sparse(vals, cand, len(cand), seen, excluded, k, buf_s, buf_i, out_s, out_i)
        ok = cand[seen[cand] & ~excluded[cand]]
        assert out_i[:m].tolist() == _reference(vals, ok, k)
