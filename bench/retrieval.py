"""Retrieval quality per signal and per-photo indexing time per model, on the sample photos.

  .venv/bin/python bench/retrieval.py [--clip-checkpoint PATH [--clip-model ViT-B-32] [--clip-config-dir DIR]]

Starts the real services (as `photostore up` does, on free ports; without CLIP weights unless
--clip-checkpoint is given), uploads the scikit-image/scikit-learn samples and a photo of a sign
reading "CAFE ROMA", waits until they are indexed, then prints:
  * top-1 and MRR over the query set (the 7 sample queries of tests/e2e/test_hybrid_search.py and
    the word on the sign) for each signal alone (text vectors, keyword, CLIP when given) and for the
    fused SearchPhotos ranking;
  * the time per photo of each model (labels, OCR, sentence, CLIP), measured with the service's own
    model classes in this process, and of the AnalyzeImages / EmbedImages calls over gRPC.
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from embed_svc.model import ClipModel, decode_image  # noqa: E402
from embed_svc.signals import ImageAnalyzer  # noqa: E402
from photos.v1 import embed_pb2, ingest_pb2, photo_pb2, search_pb2  # noqa: E402
from photostore.auth import bearer_metadata, service_api_key  # noqa: E402
from photostore.backends import open_users, open_vectors  # noqa: E402
from photostore.backends.base import VectorFilter  # noqa: E402
from photostore.settings import Settings  # noqa: E402
from search_svc.service import keyword_terms  # noqa: E402
from tests.e2e.test_hybrid_search import EXPECTED_FIRST, TEXT_PHOTO, text_photo  # noqa: E402
from tests.photo_samples import sample_photos, upload  # noqa: E402
from tests.stack import Stack  # noqa: E402
from tests.tinyclip import TinyClip  # noqa: E402

QUERIES = {**EXPECTED_FIRST, "roma": TEXT_PHOTO}
INDEX_TIMEOUT_S = 600


def start_stack(workdir: Path, settings: Settings) -> Stack:
    """The services with the CLIP model of `settings` (weights or none)."""
    clip = TinyClip(settings.model_name, settings.model_config_dir, Path(settings.model_pretrained))
    stack = Stack(workdir, clip.checkpoint_path, clip)
    if settings.model_config_dir is None:  # an architecture open_clip knows
        del stack.env["PHOTOSTORE_MODEL_CONFIG_DIR"]
    stack.env["PHOTOSTORE_TORCH_THREADS"] = "0"
    stack.start_all()
    return stack


def index_samples(stack: Stack, key: str) -> dict[str, str]:
    """Uploads the photos and waits until each is indexed and its text read; returns filename -> photo id."""
    photos = {**sample_photos(), TEXT_PHOTO: text_photo()}
    watch = stack.ingest.WatchPhotos(ingest_pb2.WatchPhotosRequest(), metadata=bearer_metadata(key),
                                     timeout=INDEX_TIMEOUT_S)
    watch.initial_metadata()
    changes: queue.Queue = queue.Queue()

    def collect() -> None:
        try:
            for change in watch:
                changes.put(change)
        except grpc.RpcError:  # cancelled below once all are indexed
            pass

    threading.Thread(target=collect, daemon=True).start()
    ids = {name: upload(stack.ingest, key, data, name).photo.name.removeprefix("photos/")
           for name, data in photos.items()}
    pending = {f"photos/{pid}" for pid in ids.values()}
    started = time.monotonic()
    while pending:
        change = changes.get(timeout=INDEX_TIMEOUT_S)
        if change.photo.status == photo_pb2.PHOTO_STATUS_FAILED:
            raise RuntimeError(f"{change.photo.filename} failed: {change.photo.status_reason}")
        if change.photo.status == photo_pb2.PHOTO_STATUS_INDEXED and \
                change.photo.text_state != photo_pb2.STAGE_STATE_PENDING:
            pending.discard(change.photo.name)
    watch.cancel()
    print(f"indexed {len(ids)} photos, text read, in {time.monotonic() - started:.1f} s (end to end, one worker)")
    return ids


def rank_of(ranked: list[tuple[str, float]], expected_id: str) -> int | None:
    """1-based rank of the expected photo; photos scoring the same rank before it (pessimistic)."""
    scores = dict(ranked)
    if expected_id not in scores:
        return None
    return sum(1 for _, score in ranked if score >= scores[expected_id])


def signal_rankings(stack: Stack, key: str, settings: Settings, owner: str, has_clip: bool
                    ) -> dict[str, dict[str, list[tuple[str, float]]]]:
    """signal -> query -> (photo id, score) best first: each signal alone, without cut-offs, and the
    fused SearchPhotos ranking."""
    vectors = open_vectors(settings)
    auth = bearer_metadata(key)
    encoders = {"text": embed_pb2.TEXT_ENCODER_SENTENCE}
    if has_clip:
        encoders["clip"] = embed_pb2.TEXT_ENCODER_CLIP
    rankings: dict[str, dict[str, list[tuple[str, float]]]] = {s: {} for s in (*encoders, "keyword", "fused")}
    for query in QUERIES:
        for signal, encoder in encoders.items():
            embedded = stack.embed.EmbedText(embed_pb2.EmbedTextRequest(texts=[query], encoder=encoder),
                                             metadata=bearer_metadata(service_api_key(settings)))
            rankings[signal][query] = vectors.search(np.asarray(embedded.embeddings[0].values, np.float32),
                                                     embedded.model, VectorFilter(owner=owner), limit=100)
        terms = keyword_terms(query)
        rankings["keyword"][query] = [(pid, len(matched) / len(terms))
                                      for pid, matched in vectors.keyword_search(VectorFilter(owner=owner), terms,
                                                                                 limit=100)]
        response = stack.search.SearchPhotos(search_pb2.SearchPhotosRequest(query=query, page_size=100),
                                             metadata=auth, timeout=60)
        rankings["fused"][query] = [(h.photo.name.removeprefix("photos/"), h.score) for h in response.hits]
    return rankings


def report_quality(rankings, ids: dict[str, str]) -> dict:
    results = {}
    print(f"\nretrieval over {len(QUERIES)} queries (rank of the expected photo; - when not found)")
    print(f"{'signal':<8} {'top-1':>6} {'MRR':>6}  " + "  ".join(f"{q[:14]:>14}" for q in QUERIES))
    for signal, by_query in rankings.items():
        ranks = [rank_of(by_query[query], ids[filename]) for query, filename in QUERIES.items()]
        top1 = sum(r == 1 for r in ranks)
        mrr = float(np.mean([1 / r if r else 0.0 for r in ranks]))
        results[signal] = {"top1": top1, "mrr": round(mrr, 3), "ranks": dict(zip(QUERIES, ranks))}
        print(f"{signal:<8} {top1:>3}/{len(QUERIES):<2} {mrr:6.3f}  "
              + "  ".join(f"{(str(r) if r else '-'):>14}" for r in ranks))
    return results


def time_models(settings: Settings, has_clip: bool) -> dict[str, float]:
    """Milliseconds per photo of each model, one photo at a time, after one warm-up photo."""
    photos = list({**sample_photos(), TEXT_PHOTO: text_photo()}.values())
    analyzer = ImageAnalyzer(settings)
    for role in analyzer.roles:
        role.model.load()
    models = {"labels": [], "ocr": [], "sentence": []}
    if has_clip:
        clip = ClipModel(settings)
        clip.load()
        models["clip"] = []
    for n, data in enumerate([photos[0], *photos]):
        image = decode_image(data, 0, settings.max_image_pixels)
        timings = {}
        started = time.perf_counter()
        labels = analyzer.labels.submit([image])[0].result()
        timings["labels"] = time.perf_counter() - started
        started = time.perf_counter()
        text = analyzer.ocr.submit([image])[0].result().strip()
        timings["ocr"] = time.perf_counter() - started
        started = time.perf_counter()
        analyzer.sentence.embed_texts([name for name, _ in labels[:settings.label_vector_top_k]]
                                      + ([text] if text else []))
        timings["sentence"] = time.perf_counter() - started
        if has_clip:
            started = time.perf_counter()
            clip.embed_images([data])
            timings["clip"] = time.perf_counter() - started
        if n:  # the first is the warm-up
            for model, seconds in timings.items():
                models[model].append(seconds)
    analyzer.close()
    return {model: 1000 * float(np.mean(samples)) for model, samples in models.items()}


def time_rpcs(stack: Stack, key: str, has_clip: bool) -> dict[str, float]:
    """Milliseconds per photo of AnalyzeImages (labels + OCR + sentence) and EmbedImages over gRPC."""
    photos = list({**sample_photos(), TEXT_PHOTO: text_photo()}.values())
    auth = bearer_metadata(service_api_key(stack.settings()))  # EmbedService is internal
    calls = {"AnalyzeImages": lambda data: stack.embed.AnalyzeImages(
        embed_pb2.AnalyzeImagesRequest(images=[data]), metadata=auth, timeout=120)}
    if has_clip:
        calls["EmbedImages"] = lambda data: stack.embed.EmbedImages(
            embed_pb2.EmbedImagesRequest(images=[data]), metadata=auth, timeout=120)
    timings = {}
    for name, call in calls.items():
        call(photos[0])
        samples = []
        for data in photos:
            started = time.perf_counter()
            call(data)
            samples.append(time.perf_counter() - started)
        timings[name] = 1000 * float(np.mean(samples))
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip-checkpoint", type=Path, help="local open_clip checkpoint (default: no CLIP)")
    parser.add_argument("--clip-model", default="ViT-B-32", help="its open_clip architecture")
    parser.add_argument("--clip-config-dir", type=Path, help="open_clip config JSON of a custom architecture")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "retrieval.json")
    args = parser.parse_args()
    has_clip = args.clip_checkpoint is not None
    workdir = Path(tempfile.mkdtemp(prefix="photostore-retrieval-"))
    print(f"{os.cpu_count()} CPUs; CLIP: {args.clip_checkpoint or 'none (no weights)'}; data in {workdir}")
    settings = Settings(data_dir=workdir / "data", model_name=args.clip_model, model_config_dir=args.clip_config_dir,
                        model_pretrained=str(args.clip_checkpoint or workdir / "no-clip-weights.pt"))
    stack = start_stack(workdir, settings)
    try:
        key = stack.add_user("bench")
        owner = open_users(settings).user_by_name("bench").id
        ids = index_samples(stack, key)
        if has_clip:
            has_clip = any(m.ready for m in stack.embed.GetModelInfo(
                embed_pb2.GetModelInfoRequest(), metadata=bearer_metadata(key)).models
                if m.role == embed_pb2.MODEL_ROLE_CLIP)
        quality = report_quality(signal_rankings(stack, key, settings, owner, has_clip), ids)
        rpcs = time_rpcs(stack, key, has_clip)
    except (grpc.RpcError, RuntimeError, queue.Empty):
        print(stack.logs())
        raise
    finally:
        stack.stop_all()
    models = time_models(settings, has_clip)
    print("\nindexing time per photo (ms, one photo at a time, mean over the samples)")
    for name, ms in {**models, **{f"{k} (gRPC)": v for k, v in rpcs.items()}}.items():
        print(f"  {name:<22} {ms:8.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"cpus": os.cpu_count(), "clip": str(args.clip_checkpoint or ""),
                                    "quality": quality, "ms_per_photo": {**models, **rpcs}}, indent=2))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
