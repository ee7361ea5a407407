"""The UserStore contract, on the embedded twin (SQLite) and on MongoDB (SecantusDB)."""
import datetime as dt
import threading

import pytest

from tests.contract.mongodb import fresh_database
from photostore.backends.base import utcnow


# Session lifetimes of the stores under test (the defaults are 12 h and 7 days).
IDLE_S = 600
MAX_AGE_S = 3600
T0 = dt.datetime(2026, 3, 1, 12, 0, 0, 123000, tzinfo=dt.timezone.utc)  # to the ms, as BSON keeps it


@pytest.fixture(params=["embedded", "mongodb"])
def users(request, tmp_path):
    """A store on a fresh database (MongoDB: a new database name, dropped after the test)."""
    lifetimes = {"session_idle_s": IDLE_S, "session_max_age_s": MAX_AGE_S}
    if request.param == "embedded":
        from photostore.backends.sqlite_users import SqliteUserStore
        opened = SqliteUserStore(tmp_path / "users.sqlite3", **lifetimes)
        yield opened
        opened.close()
        return
    from photostore.backends.mongo_metadata import MongoUserStore
    with fresh_database(request, "test_users") as settings:
        opened = MongoUserStore(settings, **lifetimes)
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


def test_replacing_keys_revokes_the_old_ones_and_ends_the_sessions(users):
    alice, bob = users.create_user("alice", "a1"), users.create_user("bob", "b1")
    users.add_api_key(alice.id, "a2")
    users.create_session(alice.id, "sa1", now=utcnow())
    users.create_session(alice.id, "sa2", now=utcnow())
    users.create_session(bob.id, "sb", now=utcnow())

    assert users.replace_api_keys(alice.id, "a3") == 2
    assert users.user_by_key_hash("a3") == alice
    assert users.user_by_key_hash("a1") is None and users.user_by_key_hash("a2") is None
    assert users.session_by_token_hash("sa1") is None and users.session_by_token_hash("sa2") is None
    # Nobody else's keys or sessions change.
    assert users.user_by_key_hash("b1") == bob and users.session_by_token_hash("sb").user == bob
    assert users.replace_api_keys(alice.id, "a3") == 0  # again: the same one key, no sessions left
    assert users.user_by_key_hash("a3") == alice

    with pytest.raises(ValueError):
        users.replace_api_keys(alice.id, "b1")  # bob's key: refused, alice's stays
    assert users.user_by_key_hash("b1") == bob and users.user_by_key_hash("a3") == alice
    with pytest.raises(ValueError):
        users.replace_api_keys("no-such-user", "x1")
    assert users.user_by_key_hash("x1") is None


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


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def test_a_session_resolves_to_its_user_until_deleted(users):
    alice, bob = users.create_user("alice", "k1"), users.create_user("bob", "k2")
    made = users.create_session(alice.id, "s1", now=T0)
    assert made.user == alice and made.created_at == made.last_seen == T0
    assert made.expire_time == at(IDLE_S)
    users.create_session(alice.id, "s2", now=T0)  # a user may hold several
    users.create_session(bob.id, "s3", now=T0)
    found = users.session_by_token_hash("s1", now=at(10))
    assert found.user == alice and found.created_at == T0 and found.expire_time == at(IDLE_S)
    assert users.session_by_token_hash("s3", now=at(10)).user == bob
    # Sessions and keys are separate credentials: a token's hash is no key's, and back.
    assert users.user_by_key_hash("s1") is None and users.session_by_token_hash("k1", now=at(10)) is None
    assert users.session_by_token_hash("unknown", now=at(10)) is None

    assert users.delete_session("s1") is True
    assert users.delete_session("s1") is False and users.delete_session("unknown") is False
    assert users.session_by_token_hash("s1", now=at(20)) is None
    assert users.session_by_token_hash("s2", now=at(20)).user == alice  # the others stay
    assert users.user_by_key_hash("k1") == alice


def test_a_session_of_no_user_is_refused(users):
    with pytest.raises(ValueError):
        users.create_session("no-such-user", "s1", now=T0)
    assert users.session_by_token_hash("s1", now=T0) is None


def test_last_seen_is_written_at_most_once_a_minute(users):
    alice = users.create_user("alice", "k1")
    users.create_session(alice.id, "s1", now=T0)
    assert users.session_by_token_hash("s1", now=at(30)).last_seen == T0
    assert users.session_by_token_hash("s1", now=at(59)).last_seen == T0
    touched = users.session_by_token_hash("s1", now=at(60))
    assert touched.last_seen == at(60) and touched.expire_time == at(60 + IDLE_S)
    # Read back from the store: written once, not again 30 s later.
    again = users.session_by_token_hash("s1", now=at(90))
    assert again.last_seen == at(60) and again.expire_time == at(60 + IDLE_S)


def test_a_session_ends_after_its_idle_time(users):
    alice = users.create_user("alice", "k1")
    users.create_session(alice.id, "s1", now=T0)
    assert users.session_by_token_hash("s1", now=at(IDLE_S - 1)) is not None  # used: idle starts again
    assert users.session_by_token_hash("s1", now=at(2 * IDLE_S - 2)) is not None
    assert users.session_by_token_hash("s1", now=at(3 * IDLE_S - 2)) is None  # unused for IDLE_S
    # Deleted on that lookup, not merely refused: an earlier clock does not bring it back.
    assert users.session_by_token_hash("s1", now=at(2 * IDLE_S)) is None
    assert users.delete_session("s1") is False


def test_a_session_ends_at_its_maximum_age_however_often_used(users):
    alice = users.create_user("alice", "k1")
    users.create_session(alice.id, "s1", now=T0)
    t = 0
    while t + 540 < MAX_AGE_S:  # used every 9 minutes, it outlives its idle time...
        t += 540
        session = users.session_by_token_hash("s1", now=at(t))
        assert session is not None and session.expire_time == min(at(t + IDLE_S), at(MAX_AGE_S))
    assert t > IDLE_S
    assert users.session_by_token_hash("s1", now=at(MAX_AGE_S - 1)) is not None
    assert users.session_by_token_hash("s1", now=at(MAX_AGE_S)) is None  # ...up to its maximum age


def test_expired_sessions_are_pruned_when_a_session_is_made(users):
    alice = users.create_user("alice", "k1")
    users.create_session(alice.id, "old", now=T0)
    users.create_session(alice.id, "recent", now=at(MAX_AGE_S - 60))
    users.session_by_token_hash("recent", now=at(MAX_AGE_S + IDLE_S - 120))
    users.create_session(alice.id, "new", now=at(MAX_AGE_S + IDLE_S - 60))
    # "old" was never looked up after it expired: the new session's creation removed it.
    assert users.delete_session("old") is False
    assert users.delete_session("recent") is True and users.delete_session("new") is True


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
