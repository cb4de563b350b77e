"""Prometheus metrics, named ``stream_rec_<subsystem>_<name>_<unit>``; the registry is injectable for tests."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from stream_rec.events import EVENT_TYPES, REASONS, RUNTIME_REASONS

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The worker's metrics, registered in ``registry`` (a fresh one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.events_in = Counter("stream_rec_ingest_events_total", "Valid events received, by type.", ["type"], registry=r)
        self.dead_letters = Counter("stream_rec_ingest_dead_letters_total", "Messages dead-lettered, by reason.", ["reason"], registry=r)
        self.miskeyed = Counter("stream_rec_ingest_miskeyed_total",
                                "Events read straight from the input (STREAM_REC_INPUT_KEYS=user_id) whose key is not their user id.",
                                registry=r)
        self.variant_measured = Counter(
            "stream_rec_variant_events_measured_total", "Events of users who had been sent a list, before they were "
            "learned, by the variant that ranked it.", ["variant"], registry=r)
        self.variant_hits = Counter(
            "stream_rec_variant_hits_total", "Of those, events whose item was on the first 10 items of the list "
            "(HR@10 = hits / measured).", ["variant"], registry=r)
        self.impressions = Counter("stream_rec_impressions_total", "Impressions (lists shown) matched to a list.",
                                   ["variant"], registry=r)
        self.shown_items = Counter("stream_rec_impressions_items_total",
                                   "Items shown from lists, by the variant and each source that listed them.",
                                   ["variant", "source"], registry=r)
        self.acted = Counter("stream_rec_attributed_events_total",
                             "Events naming the list they came from (list_id), by variant, source (any: each event "
                             "once) and type.", ["variant", "source", "type"], registry=r)
        self.unmatched = Counter("stream_rec_unmatched_total", "Impressions and events naming a list this worker "
                                 "does not remember (published before a restart, or elsewhere).", ["type"], registry=r)
        self.forgotten = Counter("stream_rec_state_users_forgotten_total",
                                 "Users erased on request (the forget topic) by the worker that owns them.", registry=r)
        self.availability = Counter("stream_rec_ingest_availability_total",
                                    "Items-topic messages applied: availability, catalogue metadata, deletions (every worker reads them all).", registry=r)
        self.unavailable = Gauge("stream_rec_state_unavailable_items", "Items currently marked unavailable.", registry=r)
        self.applied = Counter("stream_rec_learn_events_applied_total", "Events applied to the models.", registry=r)
        self.duplicates = Counter("stream_rec_learn_duplicates_total", "Redelivered events recognised and skipped.", registry=r)
        self.recommendations = Counter("stream_rec_output_recommendations_total", "Recommendation lists published.", registry=r)
        self.state_events = Gauge("stream_rec_state_events", "Events reflected in the user state this worker holds.", registry=r)
        self.restored_rows = Counter("stream_rec_state_restored_users_total",
                                     "User rows restored from the changelog (partitions this worker gained).", registry=r)
        self.restore_seconds = Histogram("stream_rec_state_restore_duration_seconds",
                                         "Time to bring one gained partition up to date with the changelog.",
                                         buckets=_LATENCY_BUCKETS, registry=r)
        self.item_updates = Counter("stream_rec_state_item_updates_total",
                                    "Other workers' item-update records: applied, skipped (applied already, e.g. this "
                                    "worker's own) or unreadable.", ["result"], registry=r)
        self.assigned_partitions = Gauge("stream_rec_worker_assigned_partitions",
                                         "Partitions of the user-keyed topic this worker owns now.", registry=r)
        self.consumer_lag = Gauge(
            "stream_rec_consumer_lag", "Messages of a partition this worker reads that it has not processed yet: the "
            "partition's end offset, as the last fetch saw it, minus the offset after the last message of it a batch "
            "processed. Set after each batch; a partition taken away from this worker loses its series.",
            ["topic", "partition"], registry=r)
        self.batch_seconds = Histogram("stream_rec_learn_batch_duration_seconds", "Processing time of one micro-batch.",
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.freshness_seconds = Histogram("stream_rec_output_freshness_seconds",
                                           "From the produce time of the oldest event in a batch to its users' refreshed lists being sent.",
                                           buckets=_LATENCY_BUCKETS, registry=r)
        for event_type in EVENT_TYPES:  # export zeros from the start, so dashboards see every series
            self.events_in.labels(event_type)
        for reason in (*REASONS, *RUNTIME_REASONS):
            self.dead_letters.labels(reason)
        for result in ("applied", "skipped", "unreadable"):
            self.item_updates.labels(result)
