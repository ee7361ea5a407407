"""The OpenAPI 3.1 description of the gateway; message schemas are derived from the protos."""
from __future__ import annotations

from functools import lru_cache

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from gateway import sessions
from photos.v1 import album_pb2, embed_pb2, ingest_pb2, photo_pb2, search_pb2

API = "/api/v1"

_SCALARS = {
    FieldDescriptor.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "uint32"},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "format": "uint32"},
    # Proto3 JSON writes 64-bit integers as strings.
    FieldDescriptor.TYPE_INT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_SINT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_UINT64: {"type": "string", "format": "uint64"},
    FieldDescriptor.TYPE_FIXED64: {"type": "string", "format": "uint64"},
}
_WELL_KNOWN = {"google.protobuf.Timestamp": {"type": "string", "format": "date-time"}}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _field_schema(field: FieldDescriptor, schemas: dict) -> dict:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        full_name = field.message_type.full_name
        schema = _WELL_KNOWN.get(full_name) or _ref(_message_schema(field.message_type, schemas))
    elif field.type == FieldDescriptor.TYPE_ENUM:
        schema = {"type": "string", "enum": [v.name for v in field.enum_type.values]}
    else:
        schema = dict(_SCALARS[field.type])
    return {"type": "array", "items": schema} if field.is_repeated else schema


def _message_schema(descriptor: Descriptor, schemas: dict) -> str:
    """Adds the JSON schema of a message (and the messages it uses) to `schemas`; returns its name."""
    name = descriptor.name
    if name not in schemas:
        schemas[name] = {}  # placeholder, in case a message refers to itself
        schemas[name] = {"type": "object", "properties": {
            field.json_name: _field_schema(field, schemas) for field in descriptor.fields}}
    return name


def _json(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERROR = {"default": _json(_ref("Status"), "Error: a google.rpc.Status with grpc-gateway's HTTP status")}


def _op(summary: str, ok: dict, *, params: list | None = None, body: dict | None = None,
        public: bool = False, cookie_only: bool = False) -> dict:
    op = {"summary": summary, "responses": {"200": ok, **ERROR}}
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = body
    if public:
        op["security"] = []
    elif cookie_only:
        op["security"] = [{"cookie": []}]
    return op


def _query(name: str, schema: dict, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


PHOTO_ID = {"name": "photo_id", "in": "path", "required": True, "schema": {"type": "string"},
            "description": "The id in the photo's name photos/{id}"}
INT32_MAX = 2**31 - 1
MAX_FILES_PER_UPLOAD = 20
PAGE_SIZE = _query("pageSize", {"type": "integer", "minimum": 0, "maximum": INT32_MAX},
                   "Results per page; 0: the service default; more than the service's maximum: its maximum")
PAGE_TOKEN = _query("pageToken", {"type": "string"},
                    "nextPageToken of the page before (with the same other parameters)")
MIN_SCORE = _query("minScore", {"type": "number", "minimum": -1, "maximum": 1},
                   "Hits scoring below are left out")
START = _query("startTime", {"type": "string", "format": "date-time"},
               "Inclusive lower bound on the time taken (ISO 8601; UTC when no zone)")
END = _query("endTime", {"type": "string", "format": "date-time"}, "Exclusive upper bound on the time taken")
FILTER = [START, END, _query("cameraMake", {"type": "string"}, "Case-insensitive exact camera make"),
          _query("cameraModel", {"type": "string"}, "Case-insensitive exact camera model"),
          _query("place", {"type": "string"}, "Case-insensitive city, region, country or country code"),
          _query("album", {"type": "string"}, "Only the photos of this album (albums/{id}, or the id)"),
          _query("favorite", {"type": "boolean"}, "Only favourites")]


def _multipart(description: str, many: int = 0) -> dict:
    """A form with the image(s) in field `file`: at most `many` of them, or just one."""
    file = {"type": "string", "format": "binary", "contentMediaType": "image/*"}
    files = {"type": "array", "items": file, "minItems": 1, "maxItems": many} if many else file
    return {"required": True, "description": description, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file"], "properties": {"file": files}}}}}


def _download(variant: str) -> dict:
    return _op(f"The {variant} bytes, streamed", {
        "description": "The image, with its sniffed content type and Content-Length",
        "content": {"image/*": {"schema": {"type": "string", "format": "binary"}}}}, params=[PHOTO_ID])


@lru_cache(maxsize=1)
def document() -> dict:
    schemas: dict = {}
    for message in (ingest_pb2.ListPhotosResponse, ingest_pb2.GetPhotoResponse,
                    ingest_pb2.DeletePhotoResponse, ingest_pb2.WatchPhotosResponse,
                    search_pb2.SearchPhotosResponse, search_pb2.FindSimilarResponse,
                    ingest_pb2.SummarizePhotosResponse,
                    embed_pb2.GetModelInfoResponse, photo_pb2.Photo):
        _message_schema(message.DESCRIPTOR, schemas)
    schemas["Status"] = {
        "type": "object", "description": "google.rpc.Status, as grpc-gateway renders errors",
        "required": ["code", "message", "details"],
        "properties": {
            "code": {"type": "integer", "description": "gRPC status code"},
            "message": {"type": "string"},
            "details": {"type": "array", "items": {
                "type": "object", "required": ["@type"], "additionalProperties": True,
                "properties": {"@type": {"type": "string"}}}},
        }}
    schemas["UploadResult"] = {
        "type": "object", "required": ["filename"],
        "properties": {"filename": {"type": "string"}, "photo": _ref("Photo"),
                       "duplicate": {"type": "boolean"}, "error": _ref("Status"),
                       "similarPhotos": {"type": "array", "items": _ref("Photo"),
                                         "description": "The caller's photos that look like this one "
                                                        "(near-duplicates); the photo is stored anyway"}},
        "description": "Either photo, duplicate and similarPhotos, or error"}
    schemas["UploadPhotosResponse"] = {"type": "object", "required": ["results"], "properties": {
        "results": {"type": "array", "items": _ref("UploadResult")}}}
    schemas["SignIn"] = {"type": "object", "properties": {"apiKey": {
        "type": "string", "description": "The API key; without it, the Authorization header's"}}}
    schemas["Session"] = {
        "type": "object", "required": ["userId", "displayName", "expireTime"],
        "description": "The signed-in user; the session token itself is only in the HttpOnly cookie",
        "properties": {"userId": {"type": "string"}, "displayName": {"type": "string"},
                       "expireTime": {"type": "string", "format": "date-time",
                                      "description": "When the session ends unless used before (idle "
                                                     "timeout), and never after sign-in + its maximum age"}}}
    empty = _json({"type": "object"})

    paths = {
        f"{API}/session": {
            "post": _op("Checks an API key and starts a session for the page: an opaque token in an "
                        f"HttpOnly, SameSite=Strict cookie ({sessions.COOKIE}); signing in again replaces "
                        "the browser's session", _json(_ref("Session")),
                        body={"required": False, "content": {"application/json": {"schema": _ref("SignIn")}},
                              "description": "The key; without it the Authorization header's. From a "
                                             "browser, the Origin must be the gateway's"}, public=True),
            "get": _op("The session of the cookie", _json(_ref("Session")), cookie_only=True),
            "delete": _op("Signs out: ends the cookie's session on the server and clears the cookie",
                          empty, public=True),
        },
        f"{API}/photos": {
            "post": _op("Uploads one or more photos", _json(
                _ref("UploadPhotosResponse"),
                "At least one file stored; each result says how its file went. When none was, the "
                "response has the first failure's status and its Status as the body, with results "
                "beside code, message and details"),
                params=[{"name": "Idempotency-Key", "in": "header", "required": False,
                         "schema": {"type": "string"},
                         "description": "A retry with the same key returns the first results"}],
                body=_multipart(f"Images as form fields named file (at most {MAX_FILES_PER_UPLOAD})",
                               many=MAX_FILES_PER_UPLOAD)),
            "get": _op("Lists photos, newest first", _json(_ref("ListPhotosResponse")), params=[
                PAGE_SIZE, _query("pageToken", {"type": "string"}, "nextPageToken of the page before"),
                _query("status", {"type": "string", "enum": ["uploaded", "indexed", "failed"]},
                       "Only photos in this status"), *FILTER,
                _query("deleted", {"type": "boolean"}, "The trash: only photos deleted and not yet purged, "
                       "most recently deleted first")]),
        },
        f"{API}/photos:summarize": {
            "get": _op("Counts of the photos matching the filters by month, camera and place",
                       _json(_ref("SummarizePhotosResponse")), params=FILTER),
        },
        f"{API}/photos/{{photo_id}}": {
            "get": _op("One photo", _json(_ref("GetPhotoResponse")), params=[PHOTO_ID]),
            "delete": _op("Moves a photo to the trash (purged with its blobs and vectors after the "
                          "retention, 30 days by default)", _json(_ref("DeletePhotoResponse")), params=[PHOTO_ID]),
            "patch": _op("Marks or unmarks a favourite", _json(_ref("UpdatePhotoResponse")), params=[PHOTO_ID],
                         body=_body({"required": ["favorite"], "properties": {"favorite": {"type": "boolean"}}})),
        },
        f"{API}/photos/{{photo_id}}/original": {"get": {
            **_download("original"),
            "responses": {**_download("original")["responses"],
                          "302": {"description": "Where the photo store hands out short-lived URLs "
                                                 "(S3): a redirect to the original there"}}}},
        f"{API}/photos/{{photo_id}}/thumbnail": {"get": _download("thumbnail")},
        f"{API}/photos/{{photo_id}}/preview": {"get": _download("preview (JPEG, at most 1440 px)")},
        f"{API}/photos/{{photo_id}}/similar": {
            "get": _op("Photos that look like this one", _json(_ref("FindSimilarResponse")),
                       params=[PHOTO_ID, PAGE_SIZE, PAGE_TOKEN, MIN_SCORE, *FILTER]),
        },
        f"{API}/similar": {
            "post": _op("Photos that look like the posted image", _json(_ref("FindSimilarResponse")),
                        params=[PAGE_SIZE, PAGE_TOKEN, MIN_SCORE, *FILTER],
                        body=_multipart("One image as the form field file")),
        },
        f"{API}/search": {
            "get": _op("Natural-language search", _json(_ref("SearchPhotosResponse")), params=[
                {"name": "q", "in": "query", "required": True,
                 "schema": {"type": "string", "minLength": 1, "pattern": "\\S"},
                 "description": "What to look for (not blank)"}, PAGE_SIZE, PAGE_TOKEN, MIN_SCORE, *FILTER]),
        },
        f"{API}/events": {
            "get": _op("Status changes as Server-Sent Events", {
                "description": "text/event-stream: `event: photo` with a WatchPhotosResponse as data, "
                               "`event: rpc_error` with a Status when the stream fails, and a comment "
                               "line every 15 s",
                "content": {"text/event-stream": {"schema": {"type": "string"}}}}, params=[
                _query("names", {"type": "string"},
                       "Comma-separated photo names to watch (their current state comes first); "
                       "default: all of the caller's photos")]),
        },
        f"{API}/model": {"get": _op("The embedding model and whether it is ready",
                                    _json(_ref("GetModelInfoResponse")))},
        "/healthz": {"get": _op("gRPC health of each service", _json(
            {"type": "object", "additionalProperties": {
                "type": "string",
                "enum": ["SERVING", "NOT_SERVING", "UNKNOWN", "SERVICE_UNKNOWN", "UNREACHABLE"]}},
            "Every service answered (503 with the same body when one did not)"), public=True)},
        "/livez": {"get": _op("The gateway process answers (liveness probe)", _json(
            {"type": "object", "properties": {"status": {"const": "SERVING"}}}), public=True)},
        "/readyz": {"get": _op("The ingest service, which checks every key, answers (readiness probe)", _json(
            {"type": "object", "additionalProperties": {"type": "string"}},
            "Ready (503 with the same body when not)"), public=True)},
    }
    paths.update(_album_and_trash_paths(schemas))
    _message_schema(ingest_pb2.ListDuplicateGroupsResponse.DESCRIPTOR, schemas)
    paths[f"{API}/duplicateGroups"] = {"get": _op(
        "Groups of photos that look alike (re-saved, resized, slightly edited), the one to keep "
        "first (most pixels, then oldest); newest group first",
        _json(_ref("ListDuplicateGroupsResponse")), params=[PAGE_SIZE, PAGE_TOKEN])}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Smart Photo Storage gateway", "version": "1.0.0",
                 "description": "HTTP/JSON over the photos.v1 gRPC services. Field names are the "
                                 "protos' in lowerCamelCase; errors are google.rpc.Status objects."},
        "security": [{"bearer": []}, {"cookie": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An API key"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": sessions.COOKIE,
                           "description": f"The session token set by POST {API}/session (HttpOnly). "
                                          "Writes on it must carry the gateway's own Origin (else "
                                          "Referer): 403 otherwise"},
            },
        },
    }


MAX_NAMES = 1000
ALBUM_ID = {"name": "album_id", "in": "path", "required": True, "schema": {"type": "string"},
            "description": "The id in the album's name albums/{id}"}
PHOTO_NAMES = {"type": "array", "items": {"type": "string", "description": "photos/{id}"},
               "minItems": 1, "maxItems": MAX_NAMES}
TITLE = {"type": "string", "minLength": 1, "maxLength": 200}


def _body(schema: dict) -> dict:
    return {"required": True, "content": {"application/json": {"schema": {"type": "object", **schema}}}}


def _album_and_trash_paths(schemas: dict) -> dict:
    """Albums (AlbumService), the trash and favourites: gateway/albums.py."""
    for message in (ingest_pb2.BatchDeletePhotosResponse, ingest_pb2.UndeletePhotosResponse,
                    ingest_pb2.PurgePhotosResponse, ingest_pb2.UpdatePhotoResponse,
                    album_pb2.ListAlbumsResponse, album_pb2.CreateAlbumResponse, album_pb2.GetAlbumResponse,
                    album_pb2.UpdateAlbumResponse, album_pb2.DeleteAlbumResponse,
                    album_pb2.AddAlbumPhotosResponse, album_pb2.RemoveAlbumPhotosResponse):
        _message_schema(message.DESCRIPTOR, schemas)
    names = _body({"required": ["names"], "properties": {"names": PHOTO_NAMES}})
    photos = _body({"required": ["photos"], "properties": {"photos": PHOTO_NAMES}})
    return {
        f"{API}/photos:batchDelete": {"post": _op(
            "Moves photos to the trash; all or nothing (404 names the missing ones)",
            _json(_ref("BatchDeletePhotosResponse")), body=names)},
        f"{API}/photos:undelete": {"post": _op(
            "Restores photos from the trash; all or nothing", _json(_ref("UndeletePhotosResponse")), body=names)},
        f"{API}/photos:purge": {"post": _op(
            "Removes photos in the trash for good (blobs, metadata, vectors); all: empties the trash",
            _json(_ref("PurgePhotosResponse")), body=_body({"properties": {
                "names": {**PHOTO_NAMES, "minItems": 0}, "all": {"type": "boolean"}}}))},
        f"{API}/albums": {
            "get": _op("The caller's albums, most recently updated first", _json(_ref("ListAlbumsResponse")),
                       params=[PAGE_SIZE, PAGE_TOKEN]),
            "post": _op("Creates an album, optionally with photos", _json(_ref("CreateAlbumResponse")),
                        params=[{"name": "Idempotency-Key", "in": "header", "required": False,
                                 "schema": {"type": "string", "maxLength": 128},
                                 "description": "A retry with the same key returns the first album"}],
                        body=_body({"required": ["title"], "properties": {
                            "title": TITLE, "photos": {**PHOTO_NAMES, "minItems": 0},
                            "coverPhoto": {"type": "string", "description": "One of photos"}}})),
        },
        f"{API}/albums/{{album_id}}": {
            "get": _op("One album", _json(_ref("GetAlbumResponse")), params=[ALBUM_ID]),
            "patch": _op("Renames an album or sets its cover (one of its photos; empty: its newest)",
                         _json(_ref("UpdateAlbumResponse")), params=[ALBUM_ID],
                         body=_body({"minProperties": 1, "properties": {
                             "title": TITLE, "coverPhoto": {"type": "string"}}})),
            "delete": _op("Deletes an album; its photos stay", _json(_ref("DeleteAlbumResponse")), params=[ALBUM_ID]),
        },
        f"{API}/albums/{{album_id}}:addPhotos": {"post": _op(
            "Adds photos to an album; all or nothing", _json(_ref("AddAlbumPhotosResponse")),
            params=[ALBUM_ID], body=photos)},
        f"{API}/albums/{{album_id}}:removePhotos": {"post": _op(
            "Removes photos from an album (they stay in the library)", _json(_ref("RemoveAlbumPhotosResponse")),
            params=[ALBUM_ID], body=photos)},
    }
