"""The UserStore contract, on the embedded twin (SQLite) and on MongoDB (SecantusDB)."""
import datetime as dt
import threading

import pytest

from tests.contract.mongodb import fresh_database
from photostore.backends.base import utcnow


@pytest.fixture(params=["embedded", "mongodb"])
def users(request, tmp_path):
    """A store on a fresh database (MongoDB: a new database name, dropped after the test)."""
    if request.param == "embedded":
        from photostore.backends.sqlite_users import SqliteUserStore
        opened = SqliteUserStore(tmp_path / "users.sqlite3")
        yield opened
        opened.close()
        return
    from photostore.backends.mongo_metadata import MongoUserStore
    with fresh_database(request, "test_users") as settings:
        opened = MongoUserStore(settings)
        try:
            yield opened
        finally:
            opened.close()


def test_create_and_look_up(users):
    before = utcnow()
    alice = users.create_user("alice", "h1")
    assert alice.name == "alice" and alice.id
    assert alice.created_at.utcoffset() == dt.timedelta(0)
    assert before - dt.timedelta(milliseconds=1) <= alice.created_at <= utcnow()
    assert users.user_by_name("alice") == alice
    assert users.user_by_key_hash("h1") == alice
    assert users.user_by_name("bob") is None and users.user_by_key_hash("nope") is None
    bob = users.create_user("bob", "h2")
    assert bob.id != alice.id and users.user_by_key_hash("h2") == bob


def test_duplicate_name_is_refused_and_leaves_nothing_behind(users):
    alice = users.create_user("alice", "h1")
    with pytest.raises(ValueError):
        users.create_user("alice", "h2")
    assert users.user_by_key_hash("h2") is None  # the failed create added no key
    assert users.user_by_name("alice") == alice
    with pytest.raises(ValueError):
        users.create_user("bob", "h1")  # alice's key
    assert users.user_by_name("bob") is None and users.user_by_key_hash("h1") == alice


def test_extra_keys(users):
    alice = users.create_user("alice", "h1")
    bob = users.create_user("bob", "b1")
    users.add_api_key(alice.id, "h2")
    users.add_api_key(alice.id, "h2")  # idempotent
    users.add_api_key(alice.id, "h1")
    assert users.user_by_key_hash("h1") == alice == users.user_by_key_hash("h2")
    users.add_api_key(bob.id, "h1")  # a key stays with the user who has it
    assert users.user_by_key_hash("h1") == alice and users.user_by_key_hash("b1") == bob


def test_concurrent_creates_of_one_name_make_one_user(users):
    n = 8
    barrier = threading.Barrier(n)
    created, refused = {}, {}

    def create(i):
        barrier.wait(timeout=60)
        try:
            created[i] = users.create_user("carol", f"key-{i}")
        except ValueError as e:
            refused[i] = e

    threads = [threading.Thread(target=create, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert len(created) == 1 and len(refused) == n - 1
    (winner_index, winner), = created.items()
    assert users.user_by_name("carol") == winner
    assert [i for i in range(n) if users.user_by_key_hash(f"key-{i}") is not None] == [winner_index]


def test_users_of_an_older_data_dir_move_to_the_users_store(tmp_path):
    """Before users had their own store they lived in metadata.sqlite3: their keys keep working."""
    import sqlite3

    from photostore.backends.sqlite_users import SqliteUserStore
    legacy = tmp_path / "metadata.sqlite3"
    with sqlite3.connect(legacy) as conn:
        conn.executescript("CREATE TABLE users (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
                           " created_at REAL NOT NULL);"
                           "CREATE TABLE api_keys (key_hash TEXT PRIMARY KEY, user_id TEXT NOT NULL);"
                           "INSERT INTO users VALUES ('u1', 'alice', 1700000000.0);"
                           "INSERT INTO api_keys VALUES ('h1', 'u1');")
    store = SqliteUserStore(tmp_path / "users.sqlite3", legacy_metadata_path=legacy)
    assert store.user_by_key_hash("h1").name == "alice"
    store.create_user("bob", "h2")
    again = SqliteUserStore(tmp_path / "users.sqlite3", legacy_metadata_path=legacy)  # once only
    assert again.user_by_name("bob") is not None and again.user_by_key_hash("h1").id == "u1"
