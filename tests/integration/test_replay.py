"""``stream-rec replay`` and ``stream-rec tail`` against the embedded broker (no worker needed)."""

from __future__ import annotations

import json
import re
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer

from stream_rec.events import stream_of
from stream_rec.settings import Settings
from tests.integration.helpers import T0, event
from tools import replay, tail
from tools.broker import free_port
from tools.produce import make_producer
from tools.workers import settings_env

pytestmark = pytest.mark.integration

TYPES = ("view", "click", "add_to_cart", "purchase")


@pytest.fixture
def env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The test's settings (own topics, the session broker) as the STREAM_REC_* environment the commands read."""
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    return settings


def shop_events(n: int, users: int = 5) -> list[dict[str, Any]]:
    """``n`` events of every type, written deliberately out of time order."""
    events = [event(f"u{k % users}", f"sku-{k % 7}", TYPES[k % 4], T0 + k * 1000, event_id=f"e{k}", category="c")
              for k in range(n)]
    return events[1::2] + events[0::2]


def received(settings: Settings) -> dict[str, list[Any]]:
    """Stream name -> messages on its input topic, in partition order (one consumer reads all three)."""
    streams = {topic: stream for stream, topic in settings.input_topics().items()}
    consumer = KafkaConsumer(*streams, bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                             auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=1500)
    messages: dict[str, list[Any]] = {stream: [] for stream in streams.values()}
    try:
        for message in consumer:
            messages[streams[message.topic]].append(message)
    finally:
        consumer.close()
    return messages


def payloads(messages: dict[str, list[Any]]) -> dict[str, list[dict[str, Any]]]:
    return {stream: [json.loads(m.value) for m in ms] for stream, ms in messages.items()}


def assert_arrived_once_in_order(messages: dict[str, list[Any]], expected: list[dict[str, Any]]) -> None:
    for stream, ms in messages.items():
        bodies = [json.loads(m.value) for m in ms]
        want = [e for e in expected if stream_of(e["type"]) == stream]
        assert Counter(json.dumps(b, sort_keys=True) for b in bodies) == Counter(json.dumps(e, sort_keys=True) for e in want)
        assert all(m.key == json.loads(m.value)["user_id"].encode() for m in ms)  # keyed by user id
        per_user: dict[str, list[int]] = defaultdict(list)
        for body in bodies:
            per_user[body["user_id"]].append(body["ts"])
        assert all(ts == sorted(ts) for ts in per_user.values()), per_user


def test_jsonl_replay_sends_every_valid_event_once_in_time_order(env: Settings, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    events = shop_events(60)
    lines = [json.dumps(e) for e in events]
    lines.insert(1, "{this is not json")  # line 2
    lines.insert(4, json.dumps({**events[0], "type": "wishlist"}))  # line 5
    lines.insert(9, json.dumps({k: v for k, v in events[0].items() if k != "user_id"}))  # line 10
    path = tmp_path / "shop.jsonl"
    path.write_text("\n".join(lines) + "\n")

    assert replay.main([str(path)]) == 0
    out = capsys.readouterr().out

    assert_arrived_once_in_order(received(env), events)  # --keep-ts is the default: the payloads are the originals
    assert "lines read   63" in out and "valid        60" in out and "invalid      3" in out
    assert f"{path}:2: not_json - " in out
    assert f"{path}:5: unknown_type - " in out
    assert f"{path}:10: missing_field - field 'user_id' is required" in out
    assert "produced     60" in out and "delivered    60 (all acknowledged)" in out


def test_csv_replay_with_map_types_skip_limit_and_rewritten_timestamps(env: Settings, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    kinds = {"view": "view", "click": "click", "add_to_cart": "addtocart", "purchase": "transaction"}
    events = shop_events(40)
    rows = [f"{e['ts']},{e['user_id'][1:]},{kinds[e['type']]},{e['item_id'][4:]}" for e in events]
    rows.insert(3, f"{T0},7,view")  # line 5: a column short
    rows.insert(6, f"{T0},7,wishlist,1")  # line 8
    path = tmp_path / "events.csv"
    path.write_text("timestamp,visitorid,event,itemid\n" + "\n".join(rows) + "\n")
    before_ms = time.time() * 1000

    code = replay.main([str(path), "--map", "user_id=visitorid,item_id=itemid,type=event,ts=timestamp",
                        "--types", "addtocart=add_to_cart,transaction=purchase", "--rewrite-ts",
                        "--skip", "5", "--limit", "30"])
    out = capsys.readouterr().out

    assert code == 0
    chosen = sorted(events, key=lambda e: e["ts"])[5:35]
    bodies = [b for bs in payloads(received(env)).values() for b in bs]
    assert len(bodies) == 30
    first_new = min(b["ts"] for b in bodies)
    assert before_ms - 1000 <= first_new <= time.time() * 1000  # the first event is "now"
    gaps = sorted(b["ts"] - first_new for b in bodies)
    assert gaps == [e["ts"] - chosen[0]["ts"] for e in chosen]  # gaps kept exactly
    assert sorted((b["user_id"], b["item_id"], b["type"]) for b in bodies) == sorted(
        (e["user_id"][1:], e["item_id"][4:], e["type"]) for e in chosen)
    assert f"{path}:5: missing_field - " in out and f"{path}:8: unknown_type - " in out
    assert "valid        35 (5 skipped, stopped at --limit)" in out and "delivered    30 (all acknowledged)" in out


def test_rate_paces_the_replay(env: Settings, tmp_path: Path) -> None:
    path = tmp_path / "shop.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in shop_events(200)))
    started = time.monotonic()
    assert replay.main([str(path), "--rate", "400"]) == 0
    elapsed = time.monotonic() - started
    stamps = sorted(m.timestamp for ms in received(env).values() for m in ms)  # the producer's send times
    assert len(stamps) == 200
    assert (stamps[-1] - stamps[0]) / 1000 >= 0.4  # 199 gaps of 2.5 ms, less one burst of 10 ms
    assert elapsed < 5


def test_speed_keeps_the_gaps_scaled(env: Settings, tmp_path: Path) -> None:
    events = [event("u1", f"sku-{k}", "view", T0 + k * 100_000) for k in range(6)]  # 100 s apart
    path = tmp_path / "slow.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    assert replay.main([str(path), "--speed", "1000"]) == 0  # 100 s -> 0.1 s
    browse = received(env)["browse"]
    assert [json.loads(m.value)["ts"] for m in browse] == [e["ts"] for e in events]  # --keep-ts
    stamps = [m.timestamp for m in browse]  # the producer's send times
    assert (stamps[-1] - stamps[0]) / 1000 >= 0.45


def test_unreachable_broker_exits_1_and_says_so(env: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "shop.jsonl"
    path.write_text(json.dumps(event("u1", "i1", "view", T0)) + "\n")
    assert replay.main([str(path), "--bootstrap", f"127.0.0.1:{free_port()}"]) == 1
    out = capsys.readouterr().out
    assert "delivered    0 (NOT ALL: 1 of 1 not delivered)" in out and "cannot reach Kafka" in out


def test_tail_writes_only_the_users_lists(env: Settings, tmp_path: Path) -> None:
    recs = {user: {"v": 1, "user_id": user, "items": [{"item_id": "sku-7", "score": 0.5, "sources": ["cooc", "mf"]}],
                   "model_version": "t", "trigger": {"event_id": "e1", "type": "purchase", "ts": T0},
                   "generated_at": T0 + 5}
            for user in ("X", "Y")}
    producer = make_producer(env.kafka_bootstrap)
    for user, rec in recs.items():
        producer.send(env.topic_recommendations, key=user.encode(), value=json.dumps(rec).encode())
    producer.flush()
    producer.close()
    out = tmp_path / "x.jsonl"

    started = time.monotonic()
    assert tail.main(["--from-beginning", "--idle-exit", "2", "--user", "X", "--jsonl", str(out)]) == 0

    assert [json.loads(line) for line in out.read_text().splitlines()] == [recs["X"]]
    assert time.monotonic() - started < 15


def test_tail_readable_lines_and_dead_letters(env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    rec = {"v": 1, "user_id": "u42", "items": [{"item_id": f"sku-{k}", "score": 1.0 / (k + 1), "sources": ["popular"]}
                                               for k in range(10)],
           "trigger": {"type": "purchase", "item_id": "sku-1", "ts": T0}, "generated_at": T0}
    headers = [("stream_rec.reason", b"not_json"), ("stream_rec.error", b"the message is not JSON"),
               ("stream_rec.source_topic", b"shop.browse"), ("stream_rec.source_partition", b"0"),
               ("stream_rec.source_offset", b"17")]
    producer = make_producer(env.kafka_bootstrap)
    producer.send(env.topic_recommendations, key=b"u42", value=json.dumps(rec).encode())
    producer.send(env.topic_dead_letter, key=b"u9", value=b"oops", headers=headers)
    producer.flush()
    producer.close()

    assert tail.main(["--from-beginning", "--idle-exit", "1.5", "--max", "5"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.endswith("u42 <- purchase sku-1: sku-0 (popular), sku-1 (popular), sku-2 (popular), sku-3 (popular), "
                         "sku-4 (popular), sku-5 (popular), sku-6 (popular), sku-7 (popular), ...")
    assert tail.main(["--dead-letter", "--from-beginning", "--idle-exit", "1.5"]) == 0
    assert "[not_json] shop.browse:0@17: the message is not JSON | 'oops'" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--map", "user_id"], "bad mapping entry 'user_id'"),
    (["--types", "buy=order"], "'order'"),
    (["--map", "visitor=user_id"], "cannot map 'visitor'"),
])
def test_bad_format_options_are_a_clear_error(tmp_path: Path, args: list[str], message: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "shop.jsonl"
    path.write_text("")
    assert replay.main([str(path), *args]) == 2
    assert message in capsys.readouterr().err


def test_missing_log_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:  # refused while the arguments are read
        replay.main([str(tmp_path / "nope.jsonl")])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"stream-rec replay: argument PATH: no such file: {tmp_path / 'nope.jsonl'}\n"


def test_ceiling_times_the_bare_producer_on_a_scratch_topic_and_prints_both_rates(
        env: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = shop_events(300)
    path = tmp_path / "shop.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    assert replay.main([str(path), "--ceiling", "200"]) == 0
    out = capsys.readouterr().out
    rates = [float(x) for x in re.findall(r"events/s\s+(\d+) \(producer ceiling in this run: (\d+) messages/s", out)[0]]
    assert all(r > 0 for r in rates), out
    assert_arrived_once_in_order(received(env), events)  # the ceiling's copies went to the scratch topic only
