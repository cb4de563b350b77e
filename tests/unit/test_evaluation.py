"""Offline evaluation: metrics with hand-computed answers, the prequential protocol, known-answer
streams, the report and the ``evaluate`` command."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from stream_rec.evaluation import metrics
from stream_rec.evaluation.baselines import (
    MODEL_NAMES,
    Batch,
    BatchItemKNN,
    Competitor,
    RiverMF,
    Vocabulary,
    build,
    river_biased_mf,
    top_k_rows,
)
from stream_rec.evaluation.metrics import MISS
from stream_rec.evaluation.prequential import Prequential, micro_batches
from stream_rec.evaluation.report import COLUMNS, table, write_json, write_plots
from stream_rec.events import Event
from stream_rec.service import RecService
from stream_rec.settings import Settings
from stream_rec.state import MemoryStore
from stream_rec.synth import ShopConfig, SyntheticShop, write_jsonl
from tools.evaluate import main

SETTINGS = Settings(explore=0.0)


def _run(events: Sequence[Event], names: Sequence[str], **kwargs: object) -> Prequential:
    vocab = Vocabulary.empty()
    run = Prequential(build(names, vocab, SETTINGS, refit_every=50), vocab, SETTINGS, **kwargs)  # type: ignore[arg-type]
    run.run(events)
    return run


# ------------------------------------------------------------------------------------ metrics


def test_rank_metrics_match_hand_computed_values() -> None:
    ranks = np.array([0, 2, 7, MISS, 15])
    assert metrics.hit_rate(ranks, 5) == pytest.approx(2 / 5)
    assert metrics.hit_rate(ranks, 10) == pytest.approx(3 / 5)
    assert metrics.hit_rate(ranks, 20) == pytest.approx(4 / 5)
    assert metrics.ndcg(ranks, 10) == pytest.approx((1 + 1 / math.log2(4) + 1 / math.log2(9)) / 5)
    assert metrics.ndcg(ranks, 5) == pytest.approx((1 + 1 / 2) / 5)
    assert metrics.mrr(ranks, 10) == pytest.approx((1 + 1 / 3 + 1 / 8) / 5)
    assert metrics.mrr(ranks, 20) == pytest.approx((1 + 1 / 3 + 1 / 8 + 1 / 16) / 5)


def test_ranks_of_finds_the_item_or_misses() -> None:
    lists = np.array([[5, 6, 7], [7, -1, -1], [1, 2, 3]])
    assert metrics.ranks_of(lists, np.array([7, 7, 9])).tolist() == [2, 0, MISS]
    assert metrics.ranks_of(np.empty((2, 0), np.int64), np.array([1, 2])).tolist() == [MISS, MISS]


def test_novelty_coverage_splits_and_curve() -> None:
    # Item 0 holds 7 of 8 events, item 1 one: shares (7+1)/10 and (1+1)/10 with add-one smoothing.
    nov = metrics.novelty(np.array([[0, 1], [1, -1]]), np.array([7, 1]), 8)
    assert nov.tolist() == pytest.approx([(-math.log2(0.8) - math.log2(0.2)) / 2, -math.log2(0.2)])
    acc = metrics.Accumulator(window=2)
    acc.add(np.array([0, 3, MISS, 12]), np.array([3, 0, 3, 0]), np.array([True, True, False, False]),
            np.array([[0, 1], [1, 2], [2, 3], [0, 0]]), np.array([1.0, 1.0, 2.0, np.nan]))
    s = acc.summary(n_items=8)
    assert s["hr@5"] == 0.5 and s["hr@20"] == 0.75
    assert s["purchase_hr@10"] == 0.5 and s["view_hr@10"] == 0.5 and s["click_hr@10"] is None
    assert s["new_user_hr@10"] == 1.0 and s["returning_hr@10"] == 0.0
    assert s["coverage@10"] == 4 / 8
    assert s["novelty@10"] == pytest.approx(4 / 3)  # the empty (NaN) list is left out
    assert s["curve"]["hr@10"] == [1.0, 0.0]


def test_top_k_rows_respects_exclusions_ties_and_padding() -> None:
    scores = np.array([[3.0, 3.0, 1.0, -np.inf], [0.0, 2.0, 5.0, 4.0]])
    out = top_k_rows(scores, 3, [np.array([], np.int64), np.array([2])])
    assert out.tolist() == [[0, 1, 2], [3, 1, 0]]
    assert top_k_rows(np.array([[1.0, -np.inf]]), 3).tolist() == [[0, -1, -1]]


# ------------------------------------------------------------------------------------ protocol


class LastLearned(Competitor):
    """Recommends the last item it learned for the user: perfect on a stream if it learned first."""

    name = "last-learned"

    def __init__(self) -> None:
        self.last: dict[int, int] = {}
        self.calls: list[str] = []

    def learn_many(self, batch: Batch) -> None:
        self.calls.append("learn")
        self.last.update(zip(batch.users.tolist(), batch.items.tolist()))

    def recommend_many(self, users: np.ndarray, k: int, exclude: Sequence[np.ndarray]) -> np.ndarray:
        self.calls.append("recommend")
        out = np.full((len(users), k), -1, dtype=np.int64)
        for r, u in enumerate(users.tolist()):
            out[r, 0] = self.last.get(u, -1)
        return out


def test_first_event_of_a_user_is_learned_but_never_scored() -> None:
    events = [Event(f"u{n}", "a", "purchase", n) for n in range(5)] + [Event("u0", "b", "view", 10)]
    run = _run(events, ["popularity"], batch_size=2)
    result = run.result()
    assert (result.events, result.scored, result.unscored_new_users) == (6, 1, 5)


@pytest.mark.parametrize("batch_size", [1, 7])
def test_items_are_recommended_before_they_are_learned(batch_size: int) -> None:
    # Each user touches the same item again and again: a model that learned the event first would
    # recommend it back and score 100 %; recommended before learning, only the repeats can hit.
    events = [Event(f"u{n % 4}", f"item-{n // 8}", "view", n) for n in range(64)]
    model = LastLearned()
    run = Prequential({"m": model}, Vocabulary.empty(), SETTINGS, batch_size=batch_size)
    result = run.run(events)
    ranks = run.accumulators["m"].ranks
    new_item = np.array([n % 8 < 4 for n in range(64)])[[n >= 4 for n in range(64)]]
    assert result.scored == 60
    assert (ranks[new_item] == MISS).all()  # the first sight of each item by a user is never a hit
    assert (ranks[~new_item] == 0).all()  # the repeat is
    # Each batch: recommend (when anyone in it can be scored), then learn; never learn-then-recommend.
    assert all(b == "learn" for a, b in zip(model.calls, model.calls[1:]) if a == "recommend")
    users = np.array([int(e.user_id[1:]) for e in events])
    assert model.calls.count("learn") == len(micro_batches(users, batch_size))


@pytest.mark.parametrize("name", ["popularity", "fused", "decayed-popularity"])
def test_bought_items_are_never_recommended_back(name: str) -> None:
    events = [Event("buyer", "hot", "purchase", 0)]
    events += [Event(f"fan{n}", "hot", "view", 1 + n) for n in range(10)]
    events += [Event("buyer", "hot", "purchase", 20), Event("fan0", "hot", "view", 21)]
    run = _run(events, [name], batch_size=1)
    ranks = run.accumulators[name].ranks
    assert ranks[-2] == MISS  # the buyer already owns "hot"
    assert ranks[-1] == 0  # a fan who only viewed it gets it first


def test_micro_batches_never_hold_a_user_twice() -> None:
    events = [Event("u", f"i{n}", "view", n) for n in range(4)]
    model = LastLearned()
    run = Prequential({"m": model}, Vocabulary.empty(), SETTINGS, batch_size=4)
    assert run.run(events).scored == 3 and model.calls.count("learn") == 4
    assert (run.accumulators["m"].ranks == MISS).all()  # each event's item is new to the user


@pytest.mark.parametrize("explore", [0.0, 0.2])
def test_offline_ranking_equals_the_worker_path_event_by_event(explore: float) -> None:
    """``rank_then_learn`` (evaluate) gives, for every event, exactly the list ``recommend`` (the worker's
    ranking) gives on a service that learned every earlier event through ``apply`` one by one."""
    shop = SyntheticShop(ShopConfig(n_users=40, n_items=80, n_categories=4, n_events=700, seed=5))
    events = [Event(e["user_id"], e["item_id"], e["type"], e["ts"]) for e in shop.events()]
    settings = Settings(explore=explore, seed=3)
    offline = RecService(settings, MemoryStore())
    first = {e.user_id: n for n, e in reversed(list(enumerate(events)))}
    scored = np.array([first[e.user_id] != n for n, e in enumerate(events)])  # a user's first event is not
    lists = np.concatenate([offline.rank_then_learn([(("e", n + a), e) for n, e in enumerate(events[a:a + 97])],
                                                    scored[a:a + 97], 10) for a in range(0, len(events), 97)])
    online = RecService(settings, MemoryStore())
    checked = full = 0
    for n, event in enumerate(events):
        if scored[n]:
            ids, _, _ = online.recommend(event.user_id, 10)
            got = [offline.items.external(i) for i in lists[n] if i >= 0]
            assert got == ids, (n, got, ids)
            checked += 1
            full += len(ids) == 10
        online.apply([(("e", n), event)], lists=False, changes=False)
    assert checked == int(scored.sum()) > 600 and full > 600
    assert offline.stats() == online.stats()


# ------------------------------------------------------------------------------------ known answers


def _pairs_stream(n_users: int = 600, n_pairs: int = 60, seed: int = 0) -> list[Event]:
    """Every user buys A_k and then B_k for a random pair k; a few best-sellers make popularity work."""
    rng = np.random.default_rng(seed)
    events, t = [], 0
    for u in range(n_users):
        k = int(rng.integers(n_pairs))
        for item in (f"A{k}", f"hot{int(rng.integers(3))}", f"B{k}"):
            events.append(Event(f"u{u}", item, "purchase", t))
            t += 1
    return events


def test_cooccurrence_finds_the_planted_pairs_and_popularity_cannot() -> None:
    run = _run(_pairs_stream(), ["cooc", "popularity", "batch-knn"], batch_size=64)
    # Scored events alternate hot, B_k (A_k is each user's first event): keep the B_k ones.
    hr = {name: np.mean(acc.ranks[1::2] < 10) for name, acc in run.accumulators.items()}
    cooc = run.accumulators["cooc"].ranks[1::2]
    assert hr["cooc"] > 0.7 and hr["popularity"] < 0.25
    assert np.mean(cooc[len(cooc) // 2:] < 10) > 0.9  # once the pairs are learned, B_k follows A_k
    assert hr["batch-knn"] > 2 * hr["popularity"]  # the retrained kNN sees the pairs too, a bit late


def _chains_stream(n_users: int = 400, n_chains: int = 40, length: int = 12) -> list[Event]:
    """Every user clicks through one of ``n_chains`` item chains in order: the items that co-occur
    with a user's history are the answer; every item is about as popular as any other."""
    rng = np.random.default_rng(0)
    events = []
    for u in range(n_users):
        chain = int(rng.integers(n_chains))
        events += [Event(f"u{u}", f"c{chain}-{step}", "click", 1000 * (u * length + step)) for step in range(length)]
    return events


def test_adaptive_fusion_learns_to_follow_the_source_that_hits() -> None:
    """Equal-weight fusion lets popularity's and MF's misses crowd co-occurrence's hits out; measured
    online, the fusion chooses co-occurrence for returning users and recovers nearly all its hits."""
    hr, weights = {}, {}
    for adapt in (False, True):
        # No decay: chain items tie, and the ties should fall to the index, not to microscopic time gaps.
        vocab, settings = Vocabulary.empty(), Settings(fusion_adapt=adapt, explore=0.0, cooc_half_life_days=0.0)
        run = Prequential(build(["fused", "cooc"], vocab, settings), vocab, settings)
        result = run.run(_chains_stream())
        hr[adapt], hr["cooc"] = result.models["fused"]["hr@10"], result.models["cooc"]["hr@10"]
        weights[adapt] = run.competitors["fused"].service.fusion.source_weights()  # type: ignore[attr-defined]
    assert hr["cooc"] > 0.8 and hr[False] < 0.7 * hr["cooc"]
    assert hr[True] > 0.95 * hr["cooc"] and hr[True] > hr[False] + 0.2
    assert weights[False]["returning"] == {
        "policy": "rrf", "weights": {"mf": 1.0, "cooc": 1.0, "popular": 1.0, "recent": 1.0, "category": 1.0}}
    chosen = weights[True]["returning"]
    if chosen["policy"] == "rrf":  # one of the grid's weightings: co-occurrence first
        w = chosen["weights"]
        assert w["cooc"] == 1.0 and max(w["mf"], w["popular"], w["recent"], w["category"]) < 0.5, chosen
    else:  # the learned scorer: an item co-occurrence lists gets the largest bonus
        bonus = chosen["bonus"]
        assert bonus["cooc"] > max(bonus["mf"], bonus["popular"], bonus["recent"], bonus["category"]) + 2, chosen


def test_river_ranking_mirror_equals_predict_one() -> None:
    model = RiverMF("river", river_biased_mf(seed=1, n_factors=4), n_negatives=1, seed=1)
    users, items = np.array([0, 1, 0, 2, 1, 0] * 5), np.array([0, 1, 2, 1, 3, 4] * 5)
    model.learn_many(Batch([], users, items, np.ones(30), np.arange(30.0), np.zeros(30, bool)))
    top = model.recommend_many(np.array([0, 1]), 5, [np.array([], np.int64)] * 2)
    for row, u in zip(top.tolist(), (0, 1)):
        expected = sorted(range(5), key=lambda i: -model.model.predict_one(u, i))
        assert row == expected


def test_batch_knn_refits_on_schedule() -> None:
    knn = BatchItemKNN(refit_every=10, neighbors=2)
    users, items = np.arange(25) % 5, np.arange(25) % 7
    for a in range(0, 25, 5):
        knn.learn_many(Batch([], users[a:a + 5], items[a:a + 5], np.ones(5), np.zeros(5), np.zeros(5, bool)))
    assert knn.n_fits == 2
    assert (np.diff(knn._S.indptr) <= 2).all()


# ------------------------------------------------------------------------------------ report and CLI


def test_report_json_has_every_model_and_every_figure(tmp_path: Path) -> None:
    shop = SyntheticShop(ShopConfig(n_users=40, n_items=60, n_categories=4, n_events=600, seed=3))
    events = [Event(e["user_id"], e["item_id"], e["type"], e["ts"]) for e in shop.events()]
    run = _run(events, MODEL_NAMES, batch_size=50, window=100)
    result = run.result()
    write_json(result, tmp_path / "r.json")
    report = json.loads((tmp_path / "r.json").read_text())
    assert list(report["models"]) == list(MODEL_NAMES)
    for name, figures in report["models"].items():
        for _, key, _ in COLUMNS:
            assert key in figures, (name, key)
        assert figures["events_per_s"] > 0 and figures["scored"] == report["scored"]
        # one thread: a model's CPU time cannot much exceed its wall time (process-wide, so some slack)
        assert figures["events_per_cpu_s"] > 0 and figures["cpu_seconds"] <= 2 * figures["seconds"] + 0.05, name
        assert len(figures["curve"]["hr@10"]) == math.ceil(report["scored"] / 100)
    assert report["events"] == 600 and report["scored"] + report["unscored_new_users"] == 600
    lines = table(result).splitlines()
    assert [line.split()[0] for line in lines[2:]] == list(MODEL_NAMES)
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in write_plots(result, tmp_path / "plots"))


def test_evaluate_command_writes_table_json_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "shop.jsonl"
    write_jsonl(SyntheticShop(ShopConfig(n_users=30, n_items=50, n_categories=5, n_events=400, seed=1)).events(), log)
    out_json, plots = tmp_path / "report.json", tmp_path / "plots"
    code = main([str(log), "--models", "fused,popularity,batch-knn", "--batch-size", "64", "--window", "50",
                 "--refit-every", "100", "--json", str(out_json), "--plots", str(plots)])
    assert code == 0
    stdout = capsys.readouterr().out
    assert "HR@10" in stdout and "events/s" in stdout
    assert all(any(line.startswith(name) for line in stdout.splitlines()) for name in ("fused", "popularity", "batch-knn"))
    report = json.loads(out_json.read_text())
    assert set(report["fused_weights"]) == {"new", "returning"}
    for policy in report["fused_weights"].values():
        per_source = policy["weights"] if policy["policy"] == "rrf" else policy["bonus"]
        assert set(per_source) == {"mf", "cooc", "popular", "recent", "category"}, policy
    assert set(report["models"]) == {"fused", "popularity", "batch-knn"}
    assert report["events"] == 400 and report["scored"] + report["unscored_new_users"] == 400
    assert sorted(p.name for p in plots.iterdir()) == ["figures.png", "hr10_over_time.png"]


def test_evaluate_replays_a_log_through_each_variant_side_by_side(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "shop.jsonl"
    write_jsonl(SyntheticShop(ShopConfig(n_users=40, n_items=60, n_categories=5, n_events=800, seed=2)).events(), log)
    out_json = tmp_path / "report.json"
    assert main([str(log), "--models", "fused", "--variants", "same:;popular:mf=0,cooc=0,recent=0,category=0,adapt=false",
                 "--json", str(out_json)]) == 0
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()[2:]}
    assert set(rows) == {"fused", "fused:same", "fused:popular"}
    models = json.loads(out_json.read_text())["models"]
    hr = {name: figures["hr@10"] for name, figures in models.items()}
    assert hr["fused:same"] == hr["fused"]  # a variant that changes nothing replays exactly as the model
    assert hr["fused:popular"] < hr["fused"]  # popularity alone: the variant's weights took effect


def test_evaluate_command_refuses_an_unknown_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "shop.jsonl"
    write_jsonl(SyntheticShop(ShopConfig(n_users=5, n_items=10, n_categories=2, n_events=20, seed=1)).events(), log)
    assert main([str(log), "--models", "fused,nope"]) == 2
    err = capsys.readouterr().err.splitlines()[-1]  # after the log line that says the events were loaded
    assert err.startswith("stream-rec evaluate: unknown model 'nope'")
