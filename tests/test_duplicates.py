"""Near-duplicates: photostore/duplicates.py on real sample photos, and the IngestService's
similar_photos and ListDuplicateGroups against the real server (embedded backends)."""
from __future__ import annotations

import datetime as dt
import functools
import io
import itertools

import grpc
import numpy as np
import pytest
from PIL import Image

from ingest_svc.server import serve as serve_ingest
from photos.v1 import ingest_pb2
from photostore import cli, duplicates
from photostore.backends.base import PhotoFacts, VectorObject
from photostore.settings import Settings, get_settings
from tests.harness import add_user
from tests.photo_samples import SKIMAGE_DIR, SKLEARN_DIR
from tests.test_ingest import make_settings, pid, running_ingest, wait_for

pytestmark = pytest.mark.timeout(180)

THRESHOLD = Settings().near_duplicate_max_distance
# Real photographs (not textures or drawings), all different pictures.
PHOTOS = [SKIMAGE_DIR / n for n in ("astronaut.png", "camera.png", "chelsea.png", "coffee.png",
                                    "coins.png", "horse.png", "motorcycle_left.png", "rocket.jpg",
                                    "hubble_deep_field.jpg", "retina.jpg", "moon.png")] + \
         [SKLEARN_DIR / "china.jpg", SKLEARN_DIR / "flower.jpg"]


@functools.cache
def photo(path) -> Image.Image:
    with Image.open(path) as img:
        return img.convert("RGB")


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality)
    return out.getvalue()


def decoded(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def resaved(img: Image.Image) -> Image.Image:
    return decoded(jpeg(img, quality=60))


def resized(img: Image.Image) -> Image.Image:
    return decoded(jpeg(img.resize((img.width // 2, img.height // 2), Image.LANCZOS)))


def cropped(img: Image.Image) -> Image.Image:
    """2 % of the width and the height cut off, half from each edge."""
    dx, dy = round(img.width * 0.01), round(img.height * 0.01)
    return decoded(jpeg(img.crop((dx, dy, img.width - dx, img.height - dy))))


# photostore.duplicates ------------------------------------------------------------------------

def test_a_hash_is_64_bits_in_hex():
    h = duplicates.phash(photo(PHOTOS[0]))
    assert len(h) == duplicates.HASH_HEX_DIGITS == 16
    assert duplicates.phash_of(jpeg(photo(PHOTOS[0]), 60)) == duplicates.phash(resaved(photo(PHOTOS[0])))


def test_an_image_of_one_colour_has_no_hash():
    """All one-colour images hash alike: they would all be flagged as copies of each other."""
    for colour in ("white", (40, 90, 200)):
        assert duplicates.phash(Image.new("RGB", (300, 200), colour)) == ""
    assert duplicates.phash_of(jpeg(Image.new("RGB", (64, 64), "black"))) == ""


@pytest.mark.parametrize("edit", [resaved, resized, cropped], ids=["jpeg-q60", "resized-50%", "cropped-2%"])
def test_edits_of_a_photo_stay_within_the_threshold(edit):
    for path in PHOTOS:
        original = duplicates.phash(photo(path))
        assert duplicates.distance(original, duplicates.phash(edit(photo(path)))) <= THRESHOLD, path.name


def test_different_photos_are_beyond_the_threshold():
    hashes = {p.name: duplicates.phash(photo(p)) for p in PHOTOS}
    closest = min((duplicates.distance(hashes[a], hashes[b]), a, b)
                  for a, b in itertools.combinations(hashes, 2))
    assert closest[0] > THRESHOLD + 4, closest  # a margin, not a near miss


def test_the_model_copy_hashes_like_the_photo():
    """The backfill hashes the 256 px model copy: it must land near what ingest hashed."""
    for path in PHOTOS:
        img = photo(path)
        copy = img.copy()
        copy.thumbnail((256 * img.width // min(img.size), 256 * img.height // min(img.size)))
        assert duplicates.distance(duplicates.phash(img), duplicates.phash_of(jpeg(copy, 95))) <= 4, path.name


def test_distances_popcount_uint64():
    hashes = duplicates.to_uint64(["0000000000000000", "ffffffffffffffff", "8000000000000001"])
    assert duplicates.distances("0000000000000000", hashes).tolist() == [0, 64, 2]
    assert duplicates.distance("ffffffffffffffff", "7fffffffffffffff") == 1


def facts(photo_id: str, phash: str, pixels: int = 100, age_s: int = 0) -> PhotoFacts:
    created = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc) - dt.timedelta(seconds=age_s)
    return PhotoFacts(id=photo_id, sort_time=created, created_at=created, size_bytes=1,
                      width=pixels, height=1, phash=phash)


def test_similar_to_leaves_out_itself_and_unhashed_photos_nearest_first():
    everything = [facts("self", "00000000000000ff"), facts("near", "00000000000000fe"),
                  facts("nearer", "00000000000000ff"), facts("far", "ffffffffffffff00"),
                  facts("unhashed", "")]
    near = duplicates.similar_to("00000000000000ff", everything, THRESHOLD, exclude="self")
    assert [(f.id, d) for f, d in near] == [("nearer", 0), ("near", 1)]


def test_groups_are_connected_components_in_keep_first_order():
    everything = [
        facts("small", "0000000000000000", pixels=10),
        facts("big-new", "0000000000000003", pixels=50, age_s=0),
        facts("big-old", "000000000000000f", pixels=50, age_s=100),
        # chained: within reach of big-old only
        facts("chained", "00000000000003ff", pixels=20, age_s=50),
        facts("alone", "ffffffffffffffff"),
        facts("unhashed", ""),
        facts("pair-a", "f0f0f0f0f0f0f0f0", age_s=300),
        facts("pair-b", "f0f0f0f0f0f0f0f1", age_s=200),
    ]
    groups = duplicates.group(everything, max_distance=6)
    assert [[f.id for f in g.photos] for g in groups] == [
        ["big-old", "big-new", "chained", "small"],  # most pixels, then oldest; newest group first
        ["pair-a", "pair-b"],
    ]


def test_vector_pairs_join_groups():
    everything = [facts("a", "0000000000000000"), facts("b", "ffffffffffffffff"), facts("c", "")]
    vectors = np.array([[1, 0], [0.99, 0.141], [0, 1]], dtype=np.float32)
    pairs = duplicates.cosine_pairs(vectors, 0.95)
    assert [p.tolist() for p in pairs] == [[0], [1]]
    assert [[f.id for f in g.photos] for g in duplicates.group(everything, 6, pairs)] == [["a", "b"]]


# IngestService --------------------------------------------------------------------------------

@pytest.fixture
def ingest(tmp_path):
    with running_ingest(make_settings(tmp_path)) as running:
        yield running


def groups_of(ingest, auth=None, **request) -> tuple[list[list[str]], str]:
    response = ingest.stub.ListDuplicateGroups(ingest_pb2.ListDuplicateGroupsRequest(**request),
                                               metadata=auth or ingest.alice)
    return [[p.name for p in g.photos] for g in response.groups], response.next_page_token


def upload(ingest, data: bytes, auth=None) -> ingest_pb2.UploadPhotoResponse:
    return ingest.upload(data, auth=auth)


def test_a_resized_copy_is_flagged_at_upload_and_grouped_after_the_original(ingest):
    original = photo(SKIMAGE_DIR / "chelsea.png")
    first = upload(ingest, jpeg(original)).photo
    other = upload(ingest, jpeg(photo(SKIMAGE_DIR / "coffee.png")))
    assert not other.similar_photos  # a different photo

    copy = upload(ingest, jpeg(original.resize((original.width // 2, original.height // 2)), 70))
    assert not copy.duplicate  # other bytes: stored anyway
    assert [p.name for p in copy.similar_photos] == [first.name]
    assert groups_of(ingest) == ([[first.name, copy.photo.name]], "")  # the larger first

    # Another user's photos are never similar.
    assert not upload(ingest, jpeg(original), auth=ingest.bob).similar_photos
    # In the trash, a photo is neither similar nor grouped.
    ingest.stub.DeletePhoto(ingest_pb2.DeletePhotoRequest(name=first.name), metadata=ingest.alice)
    assert groups_of(ingest) == ([], "")
    again = upload(ingest, jpeg(original, 80))
    assert [p.name for p in again.similar_photos] == [copy.photo.name]


def test_groups_page_with_tokens_newest_first(ingest):
    names = []
    for sample in ("astronaut.png", "rocket.jpg", "horse.png"):
        img = photo(SKIMAGE_DIR / sample)
        big = upload(ingest, jpeg(img)).photo.name
        small = upload(ingest, jpeg(img.resize((img.width * 3 // 4, img.height * 3 // 4)))).photo.name
        names.append([big, small])
    first_page, token = groups_of(ingest, page_size=2)
    assert first_page == names[::-1][:2] and token
    assert groups_of(ingest, page_size=2, page_token=token) == (names[:1], "")


def test_photos_stored_without_a_hash_are_hashed_in_the_background(ingest):
    original = photo(SKLEARN_DIR / "china.jpg")
    first = upload(ingest, jpeg(original)).photo
    second = upload(ingest, jpeg(original, 60)).photo
    for p in (first, second):  # as stored before hashes were made
        ingest.metadata.update_photo(pid(p), phash="")
    assert groups_of(ingest) == ([], "")  # and the backfill is queued
    wait_for(lambda: all(r.phash for r in ingest.metadata.get_photos(ingest.alice_id,
                                                                     [pid(first), pid(second)])), 60)
    assert groups_of(ingest)[0] == [[first.name, second.name]]


def test_close_clip_vectors_group_photos_the_hash_tells_apart(ingest):
    a = upload(ingest, jpeg(photo(SKIMAGE_DIR / "astronaut.png"))).photo
    b = upload(ingest, jpeg(photo(SKIMAGE_DIR / "camera.png"))).photo
    c = upload(ingest, jpeg(photo(SKIMAGE_DIR / "moon.png"))).photo
    rng = np.random.default_rng(0)
    base = rng.normal(size=64)
    for p, noise in ((a, 0.01), (b, 0.02), (c, 5.0)):
        v = base + rng.normal(scale=noise, size=64)
        ingest.vectors.upsert(VectorObject(photo_id=pid(p), owner=ingest.alice_id, model="clip-test",
                                           vector=(v / np.linalg.norm(v)).astype(np.float32)))
    assert groups_of(ingest)[0] == [[a.name, b.name]]  # astronaut and camera are both 512 x 512: oldest first


def test_list_duplicate_groups_checks_its_arguments(ingest):
    with pytest.raises(grpc.RpcError) as e:
        groups_of(ingest, page_size=-1)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as e:
        groups_of(ingest, page_token="forged")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# CLI ------------------------------------------------------------------------------------------

@pytest.fixture
def cli_key(tmp_path, monkeypatch):
    """A running IngestService the CLI finds through PHOTOSTORE_INGEST_TARGET; yields alice's key."""
    monkeypatch.setenv("PHOTOSTORE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PHOTOSTORE_SHUTDOWN_GRACE_SECONDS", "0.5")
    monkeypatch.setenv("PHOTOSTORE_GRPC_MAX_WORKERS", "8")
    monkeypatch.delenv("PHOTOSTORE_API_KEY", raising=False)
    get_settings.cache_clear()
    server = serve_ingest(get_settings(), port=0, max_watchers=2)
    monkeypatch.setenv("PHOTOSTORE_INGEST_TARGET", f"127.0.0.1:{server.port}")
    get_settings.cache_clear()
    _, key = add_user(get_settings(), "alice")
    try:
        yield key
    finally:
        server.stop()
        get_settings.cache_clear()


def test_cli_import_names_similar_photos_and_duplicates_lists_the_groups(cli_key, tmp_path, capsys):
    original = photo(SKIMAGE_DIR / "rocket.jpg")
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (first / "rocket.jpg").write_bytes(jpeg(original))
    (first / "horse.jpg").write_bytes(jpeg(photo(SKIMAGE_DIR / "horse.png")))
    (second / "rocket-small.jpg").write_bytes(jpeg(original.resize((original.width // 2, original.height // 2)), 70))
    assert cli.main(["import", str(first), "--key", cli_key]) == 0
    assert "looks like" not in capsys.readouterr().out
    assert cli.main(["import", str(second), "--key", cli_key]) == 0
    assert f"{second / 'rocket-small.jpg'}: looks like an existing photo: rocket.jpg\n" in capsys.readouterr().out

    assert cli.main(["duplicates", "--key", cli_key]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "group 1 (2 photos):"
    assert lines[1].startswith("  keep  photos/") and "rocket.jpg" in lines[1] and "640x427" in lines[1]
    assert "rocket-small.jpg" in lines[2] and "320x213" in lines[2]
    assert lines[3:] == ["1 group of photos that look alike"]
