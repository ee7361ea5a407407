"""`photostore delete`, `photostore trash list|restore|empty` and `photostore albums ...`: the
trash and albums over gRPC (IngestService, AlbumService), with the caller's API key."""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import uuid
from typing import Iterator, Sequence

import grpc
from google.protobuf import field_mask_pb2

from photos.v1 import album_pb2, album_pb2_grpc, ingest_pb2, ingest_pb2_grpc, search_pb2_grpc
from photostore import export
from photostore.auth import bearer_metadata
from photostore.cli import CliError, _add_key_option, _api_key, _rpc_failure
from photostore.convert import ALBUM_PREFIX, NAME_PREFIX
from photostore.server import make_channel
from photostore.settings import Settings

RPC_TIMEOUT_S = 60
PAGE_SIZE = 1000


def photo_names(values: Sequence[str]) -> list[str]:
    """photos/{id} of each argument (a name or a bare id)."""
    return [v if v.startswith(NAME_PREFIX) else NAME_PREFIX + v for v in values]


def album_name(args, albums: album_pb2_grpc.AlbumServiceStub, metadata) -> str:
    """albums/{id} of the ALBUM argument: a name, a bare id, or the title of one of the caller's albums."""
    value = args.album
    if value.startswith(ALBUM_PREFIX):
        return value
    try:
        return export.resolve_album(albums, metadata, value)
    except export.ExportError as e:
        if any(c.isspace() for c in value) or not value.isalnum():
            raise CliError(str(e)) from None
        return ALBUM_PREFIX + value  # a bare id


def selected_photos(args, settings: Settings, metadata) -> list[str]:
    """The PHOTO arguments, then the hits of --query (as `photostore search` finds them)."""
    names = photo_names(args.photos)
    if getattr(args, "query", None) is not None:
        target = settings.target("search")
        with make_channel(target) as channel:
            try:
                hits = export.search_photos(search_pb2_grpc.SearchServiceStub(channel), metadata, args.query,
                                            limit=args.limit)
            except grpc.RpcError as e:
                raise _rpc_failure(e, target) from e
        names += [p.name for p in hits]
    names = list(dict.fromkeys(names))
    if not names and getattr(args, "query", None) is not None:
        raise CliError(f"no photos found for {args.query!r}")
    return names


def _date(ts) -> str:
    return ts.ToDatetime(tzinfo=dt.timezone.utc).strftime("%Y-%m-%d")


@contextlib.contextmanager
def _ingest(args, settings: Settings) -> Iterator[tuple[ingest_pb2_grpc.IngestServiceStub,
                                                         album_pb2_grpc.AlbumServiceStub, list]]:
    """Both stubs on the ingest channel and the key's metadata; a failed call is one error line."""
    metadata = bearer_metadata(_api_key(args))
    target = settings.target("ingest")
    with make_channel(target) as channel:
        try:
            yield (ingest_pb2_grpc.IngestServiceStub(channel), album_pb2_grpc.AlbumServiceStub(channel), metadata)
        except grpc.RpcError as e:
            raise _rpc_failure(e, target) from e


# delete, trash

def cmd_delete(args, settings: Settings) -> int:
    with _ingest(args, settings) as (ingest, _, metadata):
        names = selected_photos(args, settings, metadata)
        if not names:
            raise CliError("name the photos to delete, or pass --query")
        photos = ingest.BatchDeletePhotos(ingest_pb2.BatchDeletePhotosRequest(names=names),
                                          metadata=metadata, timeout=RPC_TIMEOUT_S).photos
    purge = min((p.purge_time.ToDatetime() for p in photos), default=None)
    print(f"moved {len(photos)} photo(s) to the trash" +
          (f" (purged from {purge:%Y-%m-%d} unless restored: `photostore trash restore`)" if purge else ""))
    return 0


def _trash(ingest: ingest_pb2_grpc.IngestServiceStub, metadata) -> Iterator:
    """The photos in the caller's trash, most recently deleted first."""
    token = ""
    while True:
        page = ingest.ListPhotos(ingest_pb2.ListPhotosRequest(deleted=True, page_size=PAGE_SIZE, page_token=token),
                                 metadata=metadata, timeout=RPC_TIMEOUT_S)
        yield from page.photos
        if not (token := page.next_page_token):
            return


def cmd_trash_list(args, settings: Settings) -> int:
    now = dt.datetime.now(dt.timezone.utc)
    count = 0
    with _ingest(args, settings) as (ingest, _, metadata):
        for p in _trash(ingest, metadata):
            days = max(0, (p.purge_time.ToDatetime(tzinfo=dt.timezone.utc) - now).days)
            print(f"{p.name:<40}  {p.filename or '-':<32}  deleted {_date(p.delete_time)}  {days} days left")
            count += 1
    print(f"{count} photo(s) in the trash")
    return 0


def cmd_trash_restore(args, settings: Settings) -> int:
    if bool(args.photos) == args.all:
        raise CliError("name the photos to restore, or pass --all")
    with _ingest(args, settings) as (ingest, _, metadata):
        names = photo_names(args.photos)
        if args.all:
            names = [p.name for p in _trash(ingest, metadata)]
        photos = []
        for start in range(0, len(names), PAGE_SIZE):
            photos += ingest.UndeletePhotos(ingest_pb2.UndeletePhotosRequest(names=names[start:start + PAGE_SIZE]),
                                            metadata=metadata, timeout=RPC_TIMEOUT_S).photos
    print(f"restored {len(photos)} photo(s)")
    return 0


def cmd_trash_empty(args, settings: Settings) -> int:
    request = ingest_pb2.PurgePhotosRequest(names=photo_names(args.photos), all=not args.photos)
    with _ingest(args, settings) as (ingest, _, metadata):
        names = ingest.PurgePhotos(request, metadata=metadata, timeout=RPC_TIMEOUT_S).names
    print(f"purged {len(names)} photo(s) for good")
    return 0


# albums

def _album_line(album: album_pb2.Album) -> str:
    return f"{album.name:<40}  {album.photo_count:>5} photo(s)  {album.title}"


def cmd_albums_list(args, settings: Settings) -> int:
    count, token = 0, ""
    with _ingest(args, settings) as (_, albums, metadata):
        while True:
            page = albums.ListAlbums(album_pb2.ListAlbumsRequest(page_size=PAGE_SIZE, page_token=token),
                                     metadata=metadata, timeout=RPC_TIMEOUT_S)
            for album in page.albums:
                print(_album_line(album))
            count += len(page.albums)
            if not (token := page.next_page_token):
                break
    if not count:
        print("no albums (make one with `photostore albums create TITLE [PHOTO...]`)")
    return 0


def cmd_albums_create(args, settings: Settings) -> int:
    with _ingest(args, settings) as (_, albums, metadata):
        request = album_pb2.CreateAlbumRequest(album=album_pb2.Album(title=args.title),
                                               photos=selected_photos(args, settings, metadata),
                                               request_id=uuid.uuid4().hex)
        album = albums.CreateAlbum(request, metadata=metadata, timeout=RPC_TIMEOUT_S).album
    print(f"created {_album_line(album)}")
    return 0


def cmd_albums_add(args, settings: Settings) -> int:
    return _change_album_photos(args, settings, add=True)


def cmd_albums_remove(args, settings: Settings) -> int:
    return _change_album_photos(args, settings, add=False)


def _change_album_photos(args, settings: Settings, *, add: bool) -> int:
    with _ingest(args, settings) as (_, albums, metadata):
        names = selected_photos(args, settings, metadata)
        if not names:
            raise CliError("name the photos, or pass --query")
        name = album_name(args, albums, metadata)
        if add:
            album = albums.AddAlbumPhotos(album_pb2.AddAlbumPhotosRequest(album=name, photos=names),
                                          metadata=metadata, timeout=RPC_TIMEOUT_S).album
        else:
            album = albums.RemoveAlbumPhotos(album_pb2.RemoveAlbumPhotosRequest(album=name, photos=names),
                                             metadata=metadata, timeout=RPC_TIMEOUT_S).album
    print(_album_line(album))
    return 0


def cmd_albums_rename(args, settings: Settings) -> int:
    with _ingest(args, settings) as (_, albums, metadata):
        album = albums.UpdateAlbum(album_pb2.UpdateAlbumRequest(
            album=album_pb2.Album(name=album_name(args, albums, metadata), title=args.title),
            update_mask=field_mask_pb2.FieldMask(paths=["title"])), metadata=metadata,
            timeout=RPC_TIMEOUT_S).album
    print(_album_line(album))
    return 0


def cmd_albums_delete(args, settings: Settings) -> int:
    with _ingest(args, settings) as (_, albums, metadata):
        name = album_name(args, albums, metadata)
        albums.DeleteAlbum(album_pb2.DeleteAlbumRequest(name=name), metadata=metadata, timeout=RPC_TIMEOUT_S)
    print(f"deleted {name} (its photos stay)")
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Adds `delete`, `trash` and `albums` to the CLI's sub-commands."""
    def command(parent, name: str, handler, help: str, *arguments: tuple[str, dict]) -> None:
        parser = parent.add_parser(name, help=help, description=help)
        for argument, options in arguments:
            parser.add_argument(argument, **options)
        _add_key_option(parser)
        parser.set_defaults(handler=handler)

    some_photos = ("photos", {"nargs": "*", "metavar": "PHOTO", "help": "photos/{id} or the id"})
    album = ("album", {"metavar": "ALBUM", "help": "albums/{id}, the id, or the album's title"})
    query = ("--query", {"metavar": "Q", "help": "also the hits of this search, as `search` finds them"})
    limit = ("--limit", {"type": int, "default": None, "metavar": "N", "help": "with --query: at most N hits"})
    every = ("--all", {"action": "store_true", "help": "every photo in the trash"})

    command(commands, "delete", cmd_delete, "move photos to the trash (restorable until purged)",
            some_photos, query, limit)

    trash = commands.add_parser("trash", help="list, restore or empty the trash")
    trash_commands = trash.add_subparsers(dest="trash_command", required=True, metavar="COMMAND")
    command(trash_commands, "list", cmd_trash_list, "the photos in the trash and the days each has left")
    command(trash_commands, "restore", cmd_trash_restore, "bring photos back out of the trash", some_photos, every)
    command(trash_commands, "empty", cmd_trash_empty,
            "remove photos in the trash for good (all of them when none is named)", some_photos)

    albums = commands.add_parser("albums", help="list, create and edit albums")
    album_commands = albums.add_subparsers(dest="albums_command", required=True, metavar="COMMAND")
    command(album_commands, "list", cmd_albums_list, "your albums, most recently changed first")
    command(album_commands, "create", cmd_albums_create, "make an album, optionally with photos",
            ("title", {"metavar": "TITLE"}), some_photos, query, limit)
    command(album_commands, "add", cmd_albums_add, "add photos to an album", album, some_photos, query, limit)
    command(album_commands, "remove", cmd_albums_remove, "take photos out of an album (they stay)", album,
            some_photos, query, limit)
    command(album_commands, "rename", cmd_albums_rename, "give an album a new title", album,
            ("title", {"metavar": "TITLE"}))
    command(album_commands, "delete", cmd_albums_delete, "delete an album (its photos stay)", album)
