"""Forgetting a user (RecService.forget) and splitting a batch at forget requests (agents.app._runs)."""

from __future__ import annotations

from agents.app import _runs
from stream_rec.events import Event, Forget
from stream_rec.service import RecService
from stream_rec.settings import Settings
from stream_rec.state import MemoryStore
from stream_rec.state.changelog import MARKS_KEY, encode_marks

SETTINGS = Settings(explore=0.0, top_n=5)


def _shop(service: RecService) -> None:
    events = [Event(f"u{n % 4}", f"i{n % 7}", "purchase" if n % 5 == 0 else "view", 1000 + n, event_id=f"e{n}")
              for n in range(60)]
    service.persist(service.apply([(("lane", n), e) for n, e in enumerate(events)]))


def test_a_forgotten_user_is_a_stranger_in_memory_and_in_the_store() -> None:
    store = MemoryStore()
    service = RecService(SETTINGS, store)
    _shop(service)
    stranger = service.recommend("nobody")
    assert service.recommend("u1") != stranger and store.get("users", b"u1") is not None
    result = service.forget(("lane", 100), Forget("u1"))
    service.persist(result)
    assert result.forgotten == ["u1"]
    assert result.changelog[0][0] == (b"u1", None)  # a tombstone for its row, then the partition's marks
    assert store.get("users", b"u1") is None and store.get("users", b"u2") is not None
    assert service.recommend("u1") == stranger  # nothing bought is excluded, nothing learned is used
    u = service.users.get("u1")
    assert not service.models["mf"].state.P[u].any()  # no factor of theirs is left in memory
    assert service.export_users([u])[0].history == [] and service.purchases.of(u) == []
    assert service.stats()["users"] == 3
    # Events after the request start a new history (event ids seen before are not taken for repeats).
    again = service.apply([(("lane", 101), Event("u1", "i3", "view", 5000, event_id="e1"))])
    assert again.applied == 1 and service.profiles[u].n_events == 1


def test_a_forget_request_applied_before_is_not_applied_again() -> None:
    service = RecService(SETTINGS, MemoryStore())
    _shop(service)
    service.forget(("lane", 100), Forget("u1"))
    service.apply([(("lane", 101), Event("u1", "i3", "view", 5000))])
    redelivered = service.forget(("lane", 100), Forget("u1"))  # a crash re-reads it: what came after stays
    assert redelivered.duplicates == 1 and redelivered.forgotten == []
    assert service.profiles[service.users.get("u1")].n_events == 1


def test_a_tombstone_in_the_changelog_erases_the_user_on_the_worker_that_restores_it() -> None:
    # Worker A held u1 before a move; worker B erased u1; A gets the partition back and reads B's tombstone.
    service = RecService(SETTINGS, MemoryStore())
    _shop(service)
    result = service.restore(0, [(b"u1", None), (MARKS_KEY, encode_marks({"lane": 100}))])
    assert result.changes["users"][b"u1"] is None
    assert service.users.get("u1") not in service.profiles
    assert service.recommend("u1") == service.recommend("nobody")


def test_a_batch_is_cut_at_each_forget_request_so_each_event_sees_the_state_it_came_after() -> None:
    e, f = Event("u", "i", "view", 1), Forget("u")
    assert _runs([]) == [(0, 0)]  # an empty batch still writes its marks
    assert _runs([(("l", 0), e), (("l", 1), e)]) == [(0, 2)]
    assert _runs([(("l", 0), f), (("l", 1), f), (("l", 2), e)]) == [(0, 1), (1, 2), (2, 3)]
    assert _runs([(("l", 0), e), (("l", 1), f)]) == [(0, 1), (1, 2)]
