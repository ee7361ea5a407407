"""A MongoDB database of a test's own on the session's server, dropped after it."""
import contextlib
import uuid

import pymongo

from photostore.settings import MetadataSettings


@contextlib.contextmanager
def fresh_database(request, prefix: str):
    """The session's MetadataSettings with a new database name; the database goes afterwards."""
    settings: MetadataSettings = request.getfixturevalue("mongodb_settings").model_copy(
        update={"mongodb_database": f"{prefix}_{uuid.uuid4().hex[:12]}"})
    try:
        yield settings
    finally:
        with pymongo.MongoClient(settings.mongodb_uri.get_secret_value()) as client:
            client.drop_database(settings.mongodb_database)
