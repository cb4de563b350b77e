"""A/B variants, impressions and attribution with a real worker on the embedded broker."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from stream_rec.settings import Settings
from stream_rec.variants import variant_of
from tests.integration.helpers import STATE_EVENTS, T0, bought_together, event, latest_lists, start_worker
from tools.cli import main
from tools.produce import make_producer, produce_events

pytestmark = pytest.mark.integration

NAMES = ("control", "explore30")


def test_two_variants_rank_their_users_and_count_what_was_shown_and_clicked(
        settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = replace(settings, variants="control:;explore30:explore=0.3", impressions=True, explore=0.0)
    # Forty gadgets seen once each: young items, for exploration to pick beside the bought-together pairs.
    history = bought_together(30) + [event(f"browser-{n}", f"gadget-{n}", "view", T0 + 40_000_000 + n) for n in range(40)]
    worker = start_worker(settings, tmp_path)
    try:
        producer = make_producer(settings.kafka_bootstrap)
        assert produce_events(producer, history, settings) == len(history)
        worker.wait_for(STATE_EVENTS, len(history), timeout_s=90)
        lists = latest_lists(settings)
        chosen = {name: [u for u in sorted(lists) if lists[u]["variant"] == name][:4] for name in NAMES}
        for name, users in chosen.items():
            for n, user in enumerate(users):
                rec = lists[user]
                shown = [i["item_id"] for i in rec["items"]]  # the page shows the whole list
                producer.send(settings.topic_impressions, key=user.encode(), value=json.dumps(
                    {"list_id": rec["list_id"], "user_id": user, "items": shown}).encode())
                producer.flush()
                clicked = event(user, shown[0], "click", T0 + 50_000_000 + n, list_id=rec["list_id"])
                assert produce_events(producer, [clicked], settings) == 1
        producer.close()
        for name in NAMES:
            worker.wait_for(f"stream_rec_attributed_events_total{{source=any,type=click,variant={name}}}", 4,
                            timeout_s=60)
        metrics = worker.metrics()
    finally:
        assert worker.stop() == 0

    for user, rec in lists.items():  # each user's lists come from its variant, named in the list
        assert rec["variant"] == NAMES[variant_of(user, 2)]
    assert {name: len(users) for name, users in chosen.items()} == {"control": 4, "explore30": 4}
    assert sum(i["sources"] == ["explore"] for u in chosen["explore30"] for i in lists[u]["items"]) > 0
    assert sum(i["sources"] == ["explore"] for u in chosen["control"] for i in lists[u]["items"]) == 0
    for name in NAMES:
        assert metrics[f"stream_rec_impressions_total{{variant={name}}}"] == 4
        assert metrics[f"stream_rec_variant_events_measured_total{{variant={name}}}"] >= 4
    assert main(["state", "--data-dir", settings.data_dir, "--worker-id", "worker-1"]) == 0
    figures = json.loads(capsys.readouterr().out)["variants"]
    for name in NAMES:
        assert figures[name]["impressions"] == 4 and figures[name]["click_through"] == 1.0
        assert figures[name]["hr_at_10"] is not None and sum(figures[name]["shown"].values()) >= 20
    assert figures["explore30"]["shown"].get("explore", 0) > 0
