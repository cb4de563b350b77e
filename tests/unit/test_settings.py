from __future__ import annotations

import pytest

from stream_rec.settings import Settings, settings_table


def test_env_overrides_and_types() -> None:
    s = Settings.from_env({"STREAM_REC_TOP_N": "7", "STREAM_REC_EXPLORE": "0.25", "STREAM_REC_TOPIC_BROWSE": "shop.views"})
    assert (s.top_n, s.explore, s.topic_browse) == (7, 0.25, "shop.views")
    assert Settings().fusion_adapt is True
    assert Settings.from_env({"STREAM_REC_FUSION_ADAPT": "false"}).fusion_adapt is False
    assert Settings.from_env({"STREAM_REC_FUSION_ADAPT": "On"}).fusion_adapt is True


@pytest.mark.parametrize("env, name", [
    ({"STREAM_REC_TOP_N": "0"}, "STREAM_REC_TOP_N"),
    ({"STREAM_REC_TOP_N": "many"}, "STREAM_REC_TOP_N"),
    ({"STREAM_REC_EXPLORE": "1.5"}, "STREAM_REC_EXPLORE"),
    ({"STREAM_REC_FUSION_ADAPT": "maybe"}, "STREAM_REC_FUSION_ADAPT"),
    ({"STREAM_REC_WEIGHTS": "view=1"}, "STREAM_REC_WEIGHTS"),
    ({"STREAM_REC_WEIGHTS": "view=x,click=1,add_to_cart=1,purchase=1"}, "STREAM_REC_WEIGHTS"),
])
def test_invalid_settings_name_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        Settings.from_env(env)


def test_every_setting_is_documented() -> None:
    rows = settings_table()
    assert len(rows) == len(Settings.__dataclass_fields__)
    assert all(env.startswith("STREAM_REC_") and meaning for env, _, meaning in rows)
