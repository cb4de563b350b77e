"""Reading event logs: native JSONL, shop CSV exports and public data sets, with bad lines reported in place."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from stream_rec.events import Event
from stream_rec.logs import (PRESETS, LogFormat, LogLine, event_record, expected_columns, log_columns, parse_mapping,
                             read_log)

T0 = 1_700_000_000_000
RETAILROCKET = LogFormat(mapping=parse_mapping("user_id=visitorid,item_id=itemid,type=event,ts=timestamp"),
                         types=parse_mapping("addtocart=add_to_cart,transaction=purchase"))


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def jsonl(events: list[dict]) -> str:
    return "".join(json.dumps(e) + "\n" for e in events)


def valid(lines: list[LogLine]) -> list[Event]:
    return [line.event for line in lines if line.event is not None]


def errors(lines: list[LogLine]) -> list[tuple[int, str]]:
    return [(line.line_no, line.error.reason) for line in lines if line.error is not None]


NATIVE = [
    {"user_id": "u1", "item_id": "i1", "type": "view", "ts": T0, "event_id": "e1", "session_id": "s1",
     "category": "shoes", "price": 59.9},
    {"user_id": "u1", "item_id": "i1", "type": "purchase", "ts": T0 + 5, "quantity": 2, "properties": {"coupon": "X"}},
    {"user_id": "u2", "item_id": "i2", "type": "add_to_cart", "ts": T0 + 9},
]


def test_native_jsonl_passes_through_unchanged(tmp_path: Path) -> None:
    path = write(tmp_path / "shop.jsonl", jsonl(NATIVE))
    lines = list(read_log([path]))
    assert [(line.path, line.line_no) for line in lines] == [(str(path), 1), (str(path), 2), (str(path), 3)]
    assert [event_record(e) for e in valid(lines)] == NATIVE
    assert valid(lines)[1].properties == {"coupon": "X"}


@pytest.mark.parametrize("name", ["shop.jsonl.gz", "shop.log"])
def test_gzip_is_recognised_by_suffix_or_magic_bytes(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(gzip.compress(jsonl(NATIVE).encode()))
    assert [event_record(e) for e in valid(list(read_log([path])))] == NATIVE


def test_format_of_an_unknown_suffix_is_sniffed_from_the_content(tmp_path: Path) -> None:
    as_json = write(tmp_path / "a.log", jsonl(NATIVE[:1]))
    as_csv = write(tmp_path / "b.txt", "user_id,item_id,type,ts\nu9,i9,click,5\n")
    events = valid(list(read_log([as_json, as_csv])))
    assert [(e.user_id, e.type, e.ts_ms) for e in events] == [("u9", "click", 5), ("u1", "view", T0)]


def test_csv_with_header_mapping_and_types_retailrocket_like(tmp_path: Path) -> None:
    path = write(tmp_path / "events.csv", "timestamp,visitorid,event,itemid,transactionid\n"
                                          f"{T0 + 2},257597,view,355908,\n"
                                          f"{T0},992329,addtocart,248676,\n"
                                          f"{T0 + 1},992329,transaction,248676,4000\n")
    events = valid(list(read_log([path], RETAILROCKET)))
    assert [(e.user_id, e.item_id, e.type, e.ts_ms) for e in events] == [
        ("992329", "248676", "add_to_cart", T0),
        ("992329", "248676", "purchase", T0 + 1),
        ("257597", "355908", "view", T0 + 2),
    ]


def test_csv_keeps_category_price_session_and_event_id(tmp_path: Path) -> None:
    path = write(tmp_path / "shop.tsv", "ts\tuser\titem\tkind\tcat\tprice\tsession_id\tevent_id\tquantity\tnote\n"
                                        "2023-11-14T22:13:20Z\tu1\ti1\tbuy\tshoes\t9.5\ts1\te1\t2\tignored\n")
    fmt = LogFormat(mapping=parse_mapping("user_id=user,item_id=item,type=kind,category=cat"), types={"buy": "purchase"})
    [event] = valid(list(read_log([path], fmt)))
    assert event == Event("u1", "i1", "purchase", T0, "e1", "s1", "shoes", 9.5, 2)


@pytest.mark.parametrize("sep", [";", "|", "\t", ","])
def test_the_csv_separator_is_found_in_the_first_line(tmp_path: Path, sep: str) -> None:
    """A ``;`` export read 0 events when only tab and comma were told apart."""
    path = write(tmp_path / "shop.csv", sep.join(["user_id", "item_id", "type", "ts", "category"]) + "\n"
                 + sep.join(["u1", "i1", "view", str(T0), '"shoes, boots"']) + "\n")
    (event,) = valid(list(read_log([path])))
    assert (event.user_id, event.item_id, event.ts_ms, event.category) == ("u1", "i1", T0, "shoes, boots")
    assert log_columns(path) == ("user_id", "item_id", "type", "ts", "category")


def test_columns_found_and_expected_as_the_format_reads_them(tmp_path: Path) -> None:
    """What a command shows beside a log that yields no events."""
    csv_log = write(tmp_path / "x.csv", "timestamp;visitorid;event;itemid\n1;2;view;3\n")
    assert log_columns(csv_log) == ("timestamp", "visitorid", "event", "itemid")
    assert expected_columns() == ("user_id", "item_id", "type", "ts")
    assert set(expected_columns(RETAILROCKET)) == set(log_columns(csv_log, RETAILROCKET))
    assert log_columns(write(tmp_path / "u.data", "196\t242\t3\t881250949\n"), PRESETS["movielens"]) == (
        "user_id", "item_id", "rating", "timestamp")  # no header: the preset's names
    assert log_columns(write(tmp_path / "x.jsonl", '\n{"user": 1, "ts": 2}\n')) == ("user", "ts")
    assert log_columns(write(tmp_path / "empty.jsonl", "")) == ()


def test_jsonl_with_a_mapping_keeps_the_other_fields(tmp_path: Path) -> None:
    path = write(tmp_path / "export.ndjson", jsonl([{"visitor": 7, "sku": "a", "what": "addtocart", "when": 1_700_000_000,
                                                     "category": "toys", "price": 3}]))
    fmt = LogFormat(mapping={"user_id": "visitor", "item_id": "sku", "type": "what", "ts": "when"},
                    types={"addtocart": "add_to_cart"}, ts_unit="s")
    [event] = valid(list(read_log([path], fmt)))
    assert event == Event("7", "a", "add_to_cart", T0, category="toys", price=3.0)


def test_movielens_u_data_without_header(tmp_path: Path) -> None:
    # Synthetic lines in u.data's layout: user, item, rating, unix seconds; tab-separated, not sorted.
    path = write(tmp_path / "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n")
    events = valid(list(read_log([path], PRESETS["movielens"])))
    assert [(e.user_id, e.item_id, e.type, e.ts_ms) for e in events] == [
        ("22", "377", "purchase", 878887116000),
        ("196", "242", "purchase", 881250949000),
        ("186", "302", "purchase", 891717742000),
    ]


def test_movielens_recbole_inter_header_has_its_type_suffixes_stripped(tmp_path: Path) -> None:
    path = write(tmp_path / "ml-100k.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                                             "196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    lines = list(read_log([path], PRESETS["movielens"]))
    assert [(e.user_id, e.item_id, e.ts_ms) for e in valid(lines)] == [("196", "242", 881250949000),
                                                                       ("186", "302", 891717742000)]
    assert [line.line_no for line in lines] == [2, 3]  # the header is line 1


def test_taobao_user_behavior(tmp_path: Path) -> None:
    path = write(tmp_path / "UserBehavior.csv", "1,2268318,2520377,pv,1511544070\n1,2333346,2520771,fav,1511561733\n"
                                                "1,2576651,149192,cart,1511572885\n1,3830808,4181361,buy,1511593493\n")
    events = valid(list(read_log([path], PRESETS["taobao"])))
    assert [(e.item_id, e.type, e.category, e.ts_ms) for e in events] == [
        ("2268318", "view", "2520377", 1511544070000),
        ("2333346", "click", "2520771", 1511561733000),
        ("2576651", "add_to_cart", "149192", 1511572885000),
        ("3830808", "purchase", "4181361", 1511593493000),
    ]
    assert {e.user_id for e in events} == {"1"}


def test_sorting_is_by_timestamp_and_stable_across_files(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", jsonl([{"user_id": "a", "item_id": str(n), "type": "view", "ts": ts}
                                           for n, ts in enumerate([30, 10, 20, 10])]))
    b = write(tmp_path / "b.jsonl", jsonl([{"user_id": "b", "item_id": "0", "type": "view", "ts": 10}]))
    events = valid(list(read_log([a, b])))
    assert [(e.user_id, e.item_id) for e in events] == [("a", "1"), ("a", "3"), ("b", "0"), ("a", "2"), ("a", "0")]
    unsorted = valid(list(read_log([a, b], sort=False)))
    assert [e.ts_ms for e in unsorted] == [30, 10, 20, 10, 10]


def test_skip_and_limit_count_valid_events_after_sorting(tmp_path: Path) -> None:
    path = write(tmp_path / "a.jsonl", "garbage\n" + jsonl([{"user_id": "u", "item_id": str(ts), "type": "view", "ts": ts}
                                                            for ts in [5, 1, 4, 2, 3]]))
    lines = list(read_log([path], skip=1, limit=2))
    assert errors(lines) == [(1, "not_json")]
    assert [e.ts_ms for e in valid(lines)] == [2, 3]
    assert [e.ts_ms for e in valid(list(read_log([path], skip=3)))] == [4, 5]
    assert [e.ts_ms for e in valid(list(read_log([path], limit=0)))] == []
    streamed = list(read_log([path], sort=False, skip=1, limit=2))
    assert [e.ts_ms for e in valid(streamed)] == [1, 4]  # file order


def test_bad_lines_are_reported_with_their_line_numbers_and_do_not_stop_the_read(tmp_path: Path) -> None:
    good = {"user_id": "u", "item_id": "i", "type": "view", "ts": T0}
    path = write(tmp_path / "mixed.jsonl", "\n".join([
        json.dumps(good),
        "{not json",
        "",  # blank: skipped, still counted as a physical line
        json.dumps({**good, "type": "wishlist"}),
        json.dumps({**good, "ts": "yesterday"}),
        "[1, 2]",
        json.dumps({k: v for k, v in good.items() if k != "item_id"}),
        json.dumps(good),
    ]) + "\n")
    lines = list(read_log([path], sort=False))
    assert errors(lines) == [(2, "not_json"), (4, "unknown_type"), (5, "bad_field"), (6, "not_object"), (7, "missing_field")]
    assert [line.line_no for line in lines if line.event] == [1, 8]
    assert "'item_id'" in str(lines[-2].error)


def test_bad_csv_lines_missing_column_bad_number_unknown_type(tmp_path: Path) -> None:
    path = write(tmp_path / "events.csv", "timestamp,visitorid,event,itemid\n"
                                          f"{T0},1,view,10\n"
                                          f"{T0},2,view\n"  # a column short
                                          f"17x,3,view,30\n"  # not a number nor a date
                                          f"{T0},4,wishlist,40\n"  # a type nobody mapped
                                          f",5,view,50\n"  # an empty timestamp
                                          f"inf,6,view,60\n"
                                          f"{T0 + 1},7,transaction,70\n")
    lines = list(read_log([path], RETAILROCKET, sort=False))
    assert errors(lines) == [(3, "missing_field"), (4, "bad_field"), (5, "unknown_type"), (6, "missing_field"),
                             (7, "non_finite")]
    by_line = {line.line_no: str(line.error) for line in lines if line.error}
    assert "'itemid'" in by_line[3]
    assert "'17x'" in by_line[4]
    assert "'wishlist'" in by_line[5]
    assert "'timestamp'" in by_line[6]
    assert [(e.user_id, e.type) for e in valid(lines)] == [("1", "view"), ("7", "purchase")]


def test_bad_price_and_quantity_columns_name_the_column(tmp_path: Path) -> None:
    path = write(tmp_path / "e.csv", "user_id,item_id,type,ts,cost,quantity\nu,i,view,1,cheap,1\nu,i,view,1,2.5,two\n")
    lines = list(read_log([path], LogFormat(mapping={"price": "cost"})))
    assert errors(lines) == [(2, "bad_field"), (3, "bad_field")]
    assert "'cost'" in str(lines[0].error) and "'quantity'" in str(lines[1].error)


def test_future_check_is_off_for_history_unless_now_is_given(tmp_path: Path) -> None:
    path = write(tmp_path / "f.jsonl", jsonl([{"user_id": "u", "item_id": "i", "type": "view", "ts": 4_000_000_000_000}]))
    assert valid(list(read_log([path])))
    assert errors(list(read_log([path], now_ms=T0))) == [(1, "future_ts")]


def test_missing_file_is_an_error_at_once(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_log([tmp_path / "nope.jsonl"])


@pytest.mark.parametrize("text, message", [
    ("user_id", "'user_id'"),
    ("user_id=", "'user_id='"),
    ("=visitorid", "'=visitorid'"),
    ("user_id=a,,item_id=b", "''"),
    ("user_id=a,user_id=b", "given twice"),
])
def test_parse_mapping_errors_name_the_bad_part(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_mapping(text)


def test_parse_mapping_accepts_spaces_and_empty_text() -> None:
    assert parse_mapping(" type = event , ts=timestamp") == {"type": "event", "ts": "timestamp"}
    assert parse_mapping("") == {}


@pytest.mark.parametrize("kwargs, message", [
    ({"mapping": {"visitor": "user_id"}}, "cannot map 'visitor'"),
    ({"types": {"buy": "order"}}, "'order'"),
    ({"default_type": "rating"}, "'rating'"),
    ({"ts_unit": "us"}, "'us'"),
    ({"kind": "parquet"}, "'parquet'"),
    ({"header": False}, "column names"),
])
def test_log_format_rejects_nonsense(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LogFormat(**kwargs)
