"""Benchmark of the scale-out deployment, measured side by side in one run.

  .venv/bin/python bench/scale_out.py [--photos 60] [--vectors 100000] [--queries 100]

Starts Kafka, Weaviate, MongoDB-wire (SecantusDB) and S3 (SeaweedFS) from deploy/local on free
ports, and the services as `photostore up --scale-out` runs them (two ingest replicas, two embed
workers in one group) with a ViT-B-32 of random weights and the default settings. Prints:
  * indexing throughput (upload -> indexed, photos/s) of the same photos with one embed worker and
    with two, and their ratio;
  * SearchPhotos p50/p99 over gRPC with `--vectors` vectors in the index, on Weaviate and on the
    embedded index (a second stack of the embedded default on the same machine), interleaved;
  * each process's memory (RSS when idle with the models loaded, peak after indexing) and CPU time
    per indexed photo, engines included: the figures deploy/ sizes requests and limits from.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import open_clip
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.benchmark import QUERIES, make_photos, percentiles, synthetic_photo  # noqa: E402
from photos.v1 import embed_pb2, ingest_pb2, photo_pb2, search_pb2  # noqa: E402
from photostore.auth import bearer_metadata  # noqa: E402
from photostore.backends import open_metadata, open_users, open_vectors  # noqa: E402
from photostore.backends.base import SPACE_CLIP, VectorObject  # noqa: E402
from tests import engines  # noqa: E402
from tests.photo_samples import upload  # noqa: E402
from tests.stack import Stack  # noqa: E402

INDEX_TIMEOUT_S = 1800
BATCH = 1000


class Model:
    """open_clip's config and a random-weight checkpoint, as tests/tinyclip.py gives the stack."""

    def __init__(self, name: str, workdir: Path):
        self.model_name = name
        self.config_dir = workdir / "configs"  # empty: the architecture is open_clip's own
        self.config_dir.mkdir()
        self.checkpoint_path = workdir / f"{name}-random.pt"
        torch.manual_seed(0)
        torch.save(open_clip.create_model(name, pretrained=None).state_dict(), self.checkpoint_path)


def index_photos(stack: Stack, key: str, photos, streams: int = 4) -> float:
    """Seconds from the first upload until every photo is indexed (through WatchPhotos)."""
    meta = bearer_metadata(key)
    watch = stack.ingest.WatchPhotos(ingest_pb2.WatchPhotosRequest(), metadata=meta, timeout=INDEX_TIMEOUT_S)
    watch.initial_metadata()
    replicas = [stack.ingest, stack.ingest2] if stack.scale_out else [stack.ingest]
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(streams) as pool:
        names = set(pool.map(lambda ip: upload(replicas[ip[0] % len(replicas)], key, ip[1][1], ip[1][0]).photo.name,
                             enumerate(photos)))
    for change in watch:
        if change.photo.status == photo_pb2.PHOTO_STATUS_INDEXED:
            names.discard(change.photo.name)
        elif change.photo.status == photo_pb2.PHOTO_STATUS_FAILED:
            raise RuntimeError(f"{change.photo.name} failed: {change.photo.status_reason}")
        if not names:
            break
    watch.cancel()
    return time.perf_counter() - started


def fill_index(stack: Stack, key_owner: str, model_id: str, dim: int, count: int) -> None:
    """Synthetic photos (rows and CLIP vectors) up to `count`, so every hit hydrates as in use."""
    settings = stack.settings()
    metadata, vectors = open_metadata(settings), open_vectors(settings)
    rng = np.random.default_rng(0)
    missing = count - vectors.count(model_id)
    for start in range(0, missing, BATCH):
        batch = rng.normal(size=(min(BATCH, missing - start), dim)).astype(np.float32)
        batch /= np.linalg.norm(batch, axis=1, keepdims=True)
        ids = [f"synthetic{start + i:07d}" for i in range(len(batch))]
        metadata.insert_new_photos([synthetic_photo(photo_id, key_owner) for photo_id in ids])
        vectors.upsert_many([VectorObject(photo_id, key_owner, model_id, v, space=SPACE_CLIP)
                             for photo_id, v in zip(ids, batch)])
    vectors.close()
    metadata.close()


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return children


def footprint(pids: dict[str, int]) -> dict[str, dict[str, float]]:
    """RSS, peak RSS (MiB) and CPU seconds of each process with its descendants (gunicorn's workers,
    a JVM's launcher)."""
    children, tick = _children(), os.sysconf("SC_CLK_TCK")
    result = {}
    for name, pid in pids.items():
        tree, rss, peak, cpu = [pid], 0, 0, 0.0
        while tree:
            current = tree.pop()
            tree += children.get(current, [])
            try:
                status = dict(line.split(":", 1) for line in Path(f"/proc/{current}/status").read_text().splitlines())
                fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            rss += int(status.get("VmRSS", "0 kB").split()[0])
            peak += int(status.get("VmHWM", "0 kB").split()[0])
            cpu += (int(fields[11]) + int(fields[12])) / tick
        result[name] = {"rss_mib": rss / 1024, "peak_mib": peak / 1024, "cpu_s": cpu}
    return result


def stack_pids(stack: Stack, engine_list) -> dict[str, int]:
    pids = {name: proc.pid for name, proc in stack.procs.items()}
    for engine in engine_list:
        pids[engine.name] = int((engine.data_dir / f"{engine.name}.pid").read_text())
    return pids


def clip_model(stack: Stack, key: str):
    info = stack.embed.GetModelInfo(embed_pb2.GetModelInfoRequest(), metadata=bearer_metadata(key))
    return next(m for m in info.models if m.role == embed_pb2.MODEL_ROLE_CLIP)


def wait_ready(stack: Stack, key: str) -> None:
    deadline = time.monotonic() + 600
    while not all(m.ready for m in stack.embed.GetModelInfo(
            embed_pb2.GetModelInfoRequest(), metadata=bearer_metadata(key)).models):
        if time.monotonic() > deadline:
            raise TimeoutError("models not ready")
        time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--photos", type=int, default=60)
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "scale_out.json")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="photostore-scale-out-bench-"))
    model = Model(args.model, workdir)
    engine_list = [engines.kafka(workdir / "kafka"), engines.weaviate(workdir / "weaviate"),
                   engines.mongodb(workdir / "mongodb"), engines.s3(workdir / "s3")]
    stacks: list[Stack] = []
    results: dict = {"model": args.model, "photos": args.photos, "cpus": os.cpu_count()}
    try:
        for engine in engine_list:
            engine.data_dir.mkdir()
            engine.start()
        kafka, weaviate, mongodb, s3 = engine_list
        backends = {
            "PHOTOSTORE_BLOBS__BACKEND": "s3", "PHOTOSTORE_BLOBS__S3_ENDPOINT": f"127.0.0.1:{s3.env['S3_PORT']}",
            "PHOTOSTORE_BLOBS__S3_ACCESS_KEY": s3.env["S3_ACCESS_KEY"],
            "PHOTOSTORE_BLOBS__S3_SECRET_KEY": s3.env["S3_SECRET_KEY"],
            "PHOTOSTORE_METADATA__BACKEND": "mongodb",
            "PHOTOSTORE_METADATA__MONGODB_URI": f"mongodb://127.0.0.1:{mongodb.env['MONGODB_PORT']}/",
            "PHOTOSTORE_EVENTS__BACKEND": "kafka",
            "PHOTOSTORE_EVENTS__KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka.env['KAFKA_PORT']}",
            "PHOTOSTORE_VECTORS__BACKEND": "weaviate",
            "PHOTOSTORE_VECTORS__WEAVIATE_HTTP_PORT": weaviate.env["WEAVIATE_HTTP_PORT"],
            "PHOTOSTORE_VECTORS__WEAVIATE_GRPC_PORT": weaviate.env["WEAVIATE_GRPC_PORT"],
        }
        plain = {"PHOTOSTORE_TORCH_THREADS": "0", "PHOTOSTORE_MAX_UPLOAD_BYTES": str(100 * 1024 * 1024)}
        scaled = Stack(workdir / "scale-out", model.checkpoint_path, model, env=plain, backends=backends)
        scaled.workdir.mkdir()
        stacks.append(scaled)
        scaled.start_all()
        key = scaled.add_user("bench")
        wait_ready(scaled, key)
        photos = make_photos(args.photos)

        # Indexing: the same photos with one worker, then (as another user) with two.
        scaled.stop("worker2")
        idle = footprint(stack_pids(scaled, engine_list))
        one = index_photos(scaled, key, photos)
        busy = footprint(stack_pids(scaled, engine_list))
        results["footprint"] = {name: {"idle_rss_mib": idle[name]["rss_mib"], "peak_rss_mib": busy[name]["peak_mib"],
                                       "cpu_s_per_photo": (busy[name]["cpu_s"] - idle[name]["cpu_s"]) / args.photos}
                                for name in busy}
        scaled.start("worker2")
        two = index_photos(scaled, scaled.add_user("bench2"), photos)
        results["indexing"] = {"one_worker_photos_per_s": args.photos / one,
                               "two_workers_photos_per_s": args.photos / two, "two_over_one": one / two}

        # Search at --vectors, Weaviate and the embedded index side by side.
        embedded = Stack(workdir / "embedded", model.checkpoint_path, model, env=plain)
        embedded.workdir.mkdir()
        stacks.append(embedded)
        embedded.start_all()
        embedded_key = embedded.add_user("bench")
        wait_ready(embedded, embedded_key)
        clip = clip_model(scaled, key)
        for stack, stack_key in ((scaled, key), (embedded, embedded_key)):
            owner = open_users(stack.settings()).user_by_name("bench").id
            started = time.perf_counter()
            fill_index(stack, owner, clip.model, clip.dimension, args.vectors)
            print(f"{'weaviate' if stack.scale_out else 'embedded'}: {args.vectors} vectors loaded in "
                  f"{time.perf_counter() - started:.0f} s", flush=True)
        samples: dict[str, list[float]] = {"weaviate": [], "embedded": []}
        for stack, stack_key in ((scaled, key), (embedded, embedded_key)):  # warm-up
            stack.search.SearchPhotos(search_pb2.SearchPhotosRequest(query="warm-up"),
                                      metadata=bearer_metadata(stack_key), timeout=120)
        for i in range(args.queries):
            for label, stack, stack_key in (("weaviate", scaled, key), ("embedded", embedded, embedded_key)):
                t0 = time.perf_counter()
                stack.search.SearchPhotos(search_pb2.SearchPhotosRequest(
                    query=QUERIES[i % len(QUERIES)], page_size=20), metadata=bearer_metadata(stack_key),
                    timeout=120)
                samples[label].append(time.perf_counter() - t0)
        results["search"] = {label: dict(zip(("p50_ms", "p99_ms"), percentiles(s)))
                             for label, s in samples.items()}
        results["search"]["vectors"] = args.vectors
        loaded = footprint(stack_pids(scaled, engine_list))
        for name in results["footprint"]:
            results["footprint"][name]["loaded_rss_mib"] = loaded[name]["rss_mib"]
    finally:
        for stack in stacks:
            stack.stop_all()
        for engine in engine_list:
            engine.stop()

    ix, se = results["indexing"], results["search"]
    print(f"model {args.model} (random weights), {os.cpu_count()} CPUs, default settings (labels, OCR, CLIP)")
    print(f"indexing {args.photos} photos, Kafka + Weaviate + MongoDB-wire + S3, one embed service:")
    print(f"  one worker   {ix['one_worker_photos_per_s']:6.2f} photos/s")
    print(f"  two workers  {ix['two_workers_photos_per_s']:6.2f} photos/s   (x{ix['two_over_one']:.2f})")
    print(f"SearchPhotos over gRPC, {args.vectors} vectors, page_size 20, {args.queries} queries interleaved:")
    for label in ("weaviate", "embedded"):
        print(f"  {label:<9} p50 {se[label]['p50_ms']:7.1f} ms   p99 {se[label]['p99_ms']:7.1f} ms")
    print(f"  weaviate / embedded p50: {se['weaviate']['p50_ms'] / se['embedded']['p50_ms']:.2f}")
    print("memory and CPU per process (one worker indexing; its replicas are alike), and the memory")
    print(f"once the index holds {args.vectors} vectors and has answered the searches:")
    for name, figures in results["footprint"].items():
        print(f"  {name:<9} idle {figures['idle_rss_mib']:7.0f} MiB   peak {figures['peak_rss_mib']:7.0f} MiB   "
              f"{figures['cpu_s_per_photo']:6.3f} CPU-s per photo   loaded {figures['loaded_rss_mib']:7.0f} MiB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
