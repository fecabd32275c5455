"""Full-text search (app/chat/search.py) over a real SQLite history: words, prefixes, rooms, restarts."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.chat.protocol import ChatError
from app.chat.search import NoSearch, SQLiteSearch, fts_query
from app.chat.sqlite_history import SQLiteHistory
from app.chat.store import HistoryError, StoredMessage


def store(history: SQLiteHistory, room: str, nick: str, text: str, ref: str | int | None = None) -> None:
    def stored(result: object) -> None:
        assert not isinstance(result, HistoryError), result

    history.submit(room, nick, text, 1_700_000_000_000, ref, stored)


@pytest.fixture
def history(tmp_path: Path) -> Iterator[SQLiteHistory]:
    history = SQLiteHistory(str(tmp_path / "chat.db"))
    history.open()
    yield history
    history.close()


@pytest.fixture
def search(history: SQLiteHistory) -> Iterator[SQLiteSearch]:
    search = SQLiteSearch(history.path, history.acked_ids)
    search.open()
    yield search
    search.close()


def texts(found: list[StoredMessage]) -> list[str]:
    return [m.text for m in found]


def test_messages_are_found_by_their_words_whole_or_started_without_case_or_accents(
    history: SQLiteHistory, search: SQLiteSearch
) -> None:
    for text in ["the deploy finished", "Déploiement terminé", "lunch?", "deployed again, all green"]:
        store(history, "ops", "ci", text)
    history.flush()
    assert search.index_pending() == 4
    assert set(texts(search.search("deploy", None, 10))) == {"the deploy finished", "deployed again, all green"}
    assert texts(search.search("DEPLOIEMENT", None, 10)) == ["Déploiement terminé"]
    assert texts(search.search("green deploy", None, 10)) == ["deployed again, all green"], "every word, in one message"
    assert search.search("dinner", None, 10) == []
    (found,) = search.search("lunch", None, 10)
    assert (found.room, found.id, found.nick) == ("ops", 3, "ci")


def test_a_result_is_the_message_as_stored_its_ref_string_or_integer(
    history: SQLiteHistory, search: SQLiteSearch
) -> None:
    for ref in ("r-1", 42, None):
        store(history, "a", "ann", f"findable {ref}", ref)
    history.flush()
    search.index_pending()
    found = sorted(search.search("findable", None, 10), key=lambda m: m.id)
    assert [(m.id, m.nick, m.text, m.ts, m.ref) for m in found] == [
        (1, "ann", "findable r-1", 1_700_000_000_000, "r-1"),
        (2, "ann", "findable 42", 1_700_000_000_000, 42),
        (3, "ann", "findable None", 1_700_000_000_000, None),
    ]


def test_a_search_keeps_to_the_rooms_asked_for(history: SQLiteHistory, search: SQLiteSearch) -> None:
    store(history, "a", "ann", "shared word")
    store(history, "b", "bob", "shared word")
    history.flush()
    search.index_pending()
    assert [m.room for m in search.search("shared", ["b"], 10)] == ["b"]
    assert sorted(m.room for m in search.search("shared", None, 10)) == ["a", "b"]
    assert search.search("shared", [], 10) == []


@pytest.mark.parametrize("query", ['"OR" NEAR(a b', "a* OR b", "col:text", "'; DROP TABLE messages; --"])
def test_fts_syntax_in_a_query_is_plain_text(history: SQLiteHistory, search: SQLiteSearch, query: str) -> None:
    store(history, "a", "ann", "a b text DROP table or near col")
    history.flush()
    search.index_pending()
    assert isinstance(search.search(query, None, 10), list)  # no error, nothing run but a match


@pytest.mark.parametrize("query", ["", "   ", "?!", "x" * 201])
def test_a_query_without_words_or_too_long_is_refused(search: SQLiteSearch, query: str) -> None:
    with pytest.raises(ChatError) as refused:
        search.search(query, None, 10)
    assert (refused.value.code, refused.value.status) == ("invalid_query", 400)


def test_the_index_survives_a_restart_and_catches_up_on_what_was_stored_meanwhile(tmp_path: Path) -> None:
    path = str(tmp_path / "chat.db")
    history = SQLiteHistory(path)
    history.open()
    search = SQLiteSearch(path, history.acked_ids)
    search.open()
    store(history, "a", "ann", "before the restart")
    history.flush()
    search.index_pending()
    search.close()
    store(history, "a", "ann", "while the index was away")
    history.flush()
    history.close()

    history = SQLiteHistory(path)
    history.open()
    search = SQLiteSearch(path, history.acked_ids)
    search.open()
    try:
        assert search.index_pending() == 1, "only what it had not indexed"
        assert texts(search.search("restart", None, 10)) == ["before the restart"]
        assert texts(search.search("away", None, 10)) == ["while the index was away"]
    finally:
        search.close()
        history.close()
    # The index is a file of its own: the history's file is only read, so its commits never wait for the index.
    assert (tmp_path / "chat.search.db").exists()
    with sqlite3.connect(path) as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    assert not any(name.startswith(("messages_fts", "fts_")) for name in tables), tables


def test_with_redis_search_is_refused_as_unsupported_with_501() -> None:
    with pytest.raises(ChatError) as refused:
        NoSearch().search("anything", None, 10)
    assert (refused.value.code, refused.value.status) == ("unsupported", 501)


def test_a_query_becomes_quoted_prefixes() -> None:
    assert fts_query('deploy "now" OR x') == '"deploy"* "now"* "OR"* "x"*'


def amend(history: SQLiteHistory, message_id: int, kind: str, text: str, meta: str) -> None:
    """Edit or delete message ``message_id`` of room "a" as the service would, checking it went through."""
    (original,) = history.get("a", [message_id]).values()
    results: list[object] = []
    entry = StoredMessage("a", 0, original.nick, text if kind == "edit" else "", 2, None, None, kind, message_id)
    history.amend(original._replace(text=text, meta=meta), original.meta, entry, results.append)
    history.flush()
    assert isinstance(results[0], StoredMessage), results


def test_an_edited_message_is_found_by_its_new_words_and_no_longer_by_its_old_ones(
    history: SQLiteHistory, search: SQLiteSearch
) -> None:
    store(history, "a", "ann", "meet at the harbour")
    store(history, "a", "bob", "harbour it is")
    history.flush()
    search.index_pending()
    amend(history, 1, "edit", "meet at the station", '{"edited":2}')
    search.index_pending()
    assert texts(search.search("station", None, 10)) == ["meet at the station"]
    assert texts(search.search("harbour", None, 10)) == ["harbour it is"]
    (found,) = search.search("station", None, 10)
    assert (found.id, found.meta, found.kind) == (1, '{"edited":2}', None), "the message as it is now"
    assert search.search("edited", None, 10) == [], "amendment entries are not indexed"


def test_a_deleted_message_is_not_found(history: SQLiteHistory, search: SQLiteSearch) -> None:
    store(history, "a", "ann", "secret plans")
    history.flush()
    search.index_pending()
    amend(history, 1, "delete", "", '{"deleted":2}')
    assert search.search("secret", None, 10) == [], "not even before the indexer's next pass"
    search.index_pending()
    assert search.search("secret", None, 10) == []


def test_a_message_edited_before_it_was_indexed_is_indexed_with_its_new_text(
    history: SQLiteHistory, search: SQLiteSearch
) -> None:
    store(history, "a", "ann", "typo teh")
    history.flush()
    amend(history, 1, "edit", "typo the", '{"edited":2}')
    amend(history, 1, "edit", "typo fixed", '{"edited":3}')
    assert search.index_pending() == 3
    assert texts(search.search("fixed", None, 10)) == ["typo fixed"]
    assert search.search("teh", None, 10) == []
