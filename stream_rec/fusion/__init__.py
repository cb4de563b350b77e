"""Blend the sources into one ranked list, with a few exploration slots.

Scores of different sources live on unrelated scales (dot products, cosine sums, decayed counts), so
fusion works on ranks. Two kinds of policy turn the sources' ranks into one order:

* **weighted reciprocal-rank fusion**: an item ranked ``r`` (1-based) by source ``s`` earns
  ``weight_s / (RRF_K + r)``, summed over sources, so an item several sources agree on rises above
  one a single source ranks first; :data:`WEIGHT_GRID` holds 211 weightings (each source at 0, 1/4
  or 1 of its base weight);
* **the learned scorer** (:data:`LEARNED`): ``bonus_s - slope_s * log(r)`` summed over the sources that
  list the item, its parameters learned online by a softmax (top-1) likelihood step on every measured
  event (:func:`_learn_scorer`). It can say what no weighting can, e.g. "the user's own recent item
  first, whatever its rank elsewhere".

**The choice adapts online.** Every ``sample_every``-th event of a user with history is used, before
it is learned, to score every policy: each source ranks its own list once, and a policy scores
``1 / log2(rank + 2)`` when the order it would produce lists the event's item at ``rank``
(:func:`measure_gathered`). This is full-information online learning, every policy judged on every
measured event, so none needs to be tried out on users. Hits decay with a half-life of
:data:`HITS_HALF_LIFE` measured events and are kept apart for new and for returning users; lists use
the policy with the most hits once it beats equal weights by a clear margin (:func:`chosen_weighting`).
A source weighted 0 still fills lists the others cannot fill.

The whole ranking of one user is one compiled function, :func:`fuse`: each source's top list, the
fusion, the exploration draw. The worker calls it once per touched user and ``stream-rec evaluate``
once per scored event, so both rank with the very same code.
"""

from stream_rec.fusion.explore import EXPLORE_SCAN, SHOWS_PER_EVENT
from stream_rec.fusion.measure import measure_gathered
from stream_rec.fusion.model import Fusion
from stream_rec.fusion.policy import (CATEGORY, COOC, EXPLORE, EXPLORE_BIT, GATHERED, LEARNED, MF, N_POLICIES,
                                      N_SOURCES, POPULAR, POPULAR_BIT, RECENT, RRF_K, SOURCES, WEIGHT_GRID, label)
from stream_rec.fusion.rank import fuse, measured, mf_list, rank_and_measure
from stream_rec.fusion.scratch import FusionParams, Scratch, new_scratch

__all__ = ["CATEGORY", "COOC", "EXPLORE", "EXPLORE_BIT", "EXPLORE_SCAN", "GATHERED", "LEARNED", "MF", "N_POLICIES",
           "N_SOURCES", "POPULAR", "POPULAR_BIT", "RECENT", "RRF_K", "SHOWS_PER_EVENT", "SOURCES", "WEIGHT_GRID",
           "Fusion", "FusionParams", "Scratch", "fuse", "label", "measure_gathered", "measured", "mf_list",
           "new_scratch", "rank_and_measure"]
