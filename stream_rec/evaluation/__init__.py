"""Offline evaluation: prequential (test-then-train) replay of an event log through our service and
its competitors, with ranking metrics, a table, a JSON report and plots."""

from stream_rec.evaluation.baselines import MODEL_NAMES, Batch, Competitor, Vocabulary, build
from stream_rec.evaluation.metrics import KS, MISS, Accumulator, hit_rate, mrr, ndcg, ranks_of
from stream_rec.evaluation.prequential import BATCH_SIZE, Evaluation, Prequential, micro_batches

__all__ = ["BATCH_SIZE", "KS", "MISS", "MODEL_NAMES", "Accumulator", "Batch", "Competitor", "Evaluation", "Prequential",
           "Vocabulary", "build", "hit_rate", "micro_batches", "mrr", "ndcg", "ranks_of"]
