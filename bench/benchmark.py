"""End-to-end benchmark of the embedded default, with the raw model measured side by side.

  .venv/bin/python bench/benchmark.py [--photos 200] [--sizes 10000 100000] [--queries 200]

Starts the real services (`photostore up`) on free ports with a ViT-B-32 of random weights (same
architecture and compute as the pretrained one, which no registry ships), then prints:
  * ingest throughput: upload over gRPC -> indexed (WatchPhotos), photos/s, against the raw
    `encode_image` throughput of the same model in this process;
  * search latency p50/p99 of SearchPhotos over gRPC at each vector count, against the latency of
    text encoding alone (EmbedText over gRPC, and `encode_text` in process).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import io
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
import open_clip
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from photos.v1 import embed_pb2, embed_pb2_grpc, ingest_pb2, ingest_pb2_grpc, photo_pb2  # noqa: E402
from photos.v1 import search_pb2, search_pb2_grpc  # noqa: E402
from photostore.auth import bearer_metadata  # noqa: E402
from photostore.backends import open_metadata, open_users, open_vectors  # noqa: E402
from photostore.backends.base import STATUS_INDEXED, PhotoRecord, VectorObject, utcnow  # noqa: E402
from photostore.settings import Settings  # noqa: E402
from tests.photo_samples import SAMPLE_FILES, upload  # noqa: E402

QUERIES = ["a cat", "a cup of coffee", "an astronaut", "a rocket", "a flower", "a temple",
           "a motorcycle", "family at the beach", "birthday party at night", "snow in the mountains"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentiles(samples_s: list[float]) -> tuple[float, float]:
    ms = np.asarray(samples_s) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def make_photos(n: int) -> list[tuple[str, bytes]]:
    """n distinct JPEGs made from the sample photos (shifted crops, so none is a duplicate)."""
    rng = random.Random(0)
    sources = [Image.open(p).convert("RGB") for p in SAMPLE_FILES]
    photos = []
    for i in range(n):
        img = sources[i % len(sources)]
        w, h = img.size
        dx, dy = rng.randrange(0, max(1, w // 10)), rng.randrange(0, max(1, h // 10))
        crop = img.crop((dx, dy, w - rng.randrange(0, max(1, w // 10)), h))
        crop.thumbnail((1024, 1024))
        buf = io.BytesIO()
        crop.save(buf, "JPEG", quality=90)
        photos.append((f"bench-{i:05d}.jpg", buf.getvalue()))
    return photos


def synthetic_photo(photo_id: str, owner: str) -> PhotoRecord:
    """A stored photo's row for a synthetic vector, so search hydrates every hit as in real use."""
    now = utcnow()
    return PhotoRecord(id=photo_id, owner=owner, filename=f"{photo_id}.jpg", sha256=photo_id,
                       content_type="image/jpeg", size_bytes=1, width=1, height=1,
                       blob_key="", thumbnail_key="", created_at=now, updated_at=now,
                       status=STATUS_INDEXED, published=True)


def raw_encode_image(model, preprocess, photos, batch_size: int) -> float:
    """Images per second of encode_image alone (decode and preprocess done beforehand)."""
    tensors = [preprocess(Image.open(io.BytesIO(data)).convert("RGB")) for _, data in photos]
    with torch.inference_mode():
        model.encode_image(torch.stack(tensors[:2]))  # warm-up
        started = time.perf_counter()
        for i in range(0, len(tensors), batch_size):
            model.encode_image(torch.stack(tensors[i:i + batch_size]))
        return len(tensors) / (time.perf_counter() - started)


class Services:
    def __init__(self, env: dict[str, str], workdir: Path):
        self.env = env
        self.log = open(workdir / "services.log", "wb")
        self.proc = subprocess.Popen([str(Path(sys.executable).parent / "photostore"), "up"],
                                     env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, target: str, service: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(target) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError("photostore up exited; see services.log")
                try:
                    if stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status == 1:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.5)
        raise TimeoutError(f"{target} {service} not serving")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="photostore-bench-"))
    checkpoint = workdir / f"{args.model}-random.pt"
    torch.manual_seed(0)
    torch.save(open_clip.create_model(args.model, pretrained=None).state_dict(), checkpoint)
    model, _, preprocess = open_clip.create_model_and_transforms(args.model, pretrained=str(checkpoint))
    model.eval()
    tokenizer = open_clip.get_tokenizer(args.model)

    photos = make_photos(args.photos)
    settings = Settings(data_dir=workdir / "data")
    raw_images_per_s = raw_encode_image(model, preprocess, photos, settings.model_batch_size)

    @torch.inference_mode()
    def encode_text(text: str) -> None:
        model.encode_text(tokenizer([text]))

    encode_text("warm-up")

    ports = {name: free_port() for name in ("ingest", "embed", "search", "gateway")}
    env = {**os.environ, "PHOTOSTORE_DATA_DIR": str(settings.data_dir),
           "PHOTOSTORE_MODEL_NAME": args.model, "PHOTOSTORE_MODEL_PRETRAINED": str(checkpoint),
           **{f"PHOTOSTORE_{k.upper()}_PORT": str(v) for k, v in ports.items()}}
    key = re.search(r"psk_\S+", subprocess.run(
        [str(Path(sys.executable).parent / "photostore"), "users", "add", "bench"], env=env,
        capture_output=True, text=True, check=True).stdout).group(0)
    services = Services(env, workdir)
    results: dict = {"model": args.model, "photos": args.photos, "streams": args.streams,
                     "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    try:
        targets = {k: f"127.0.0.1:{v}" for k, v in ports.items()}
        for name in ("ingest", "search"):
            services.wait_ready(targets[name], "")
        services.wait_ready(targets["embed"], "photos.v1.EmbedService")
        meta = bearer_metadata(key)
        ingest = ingest_pb2_grpc.IngestServiceStub(grpc.insecure_channel(targets["ingest"]))
        search = search_pb2_grpc.SearchServiceStub(grpc.insecure_channel(targets["search"]))
        embed = embed_pb2_grpc.EmbedServiceStub(grpc.insecure_channel(targets["embed"]))
        clip = next(m for m in embed.GetModelInfo(embed_pb2.GetModelInfoRequest(), metadata=meta).models
                    if m.role == embed_pb2.MODEL_ROLE_CLIP)
        model_id = clip.model

        # Ingest: upload with several streams, until every photo is indexed.
        watch = ingest.WatchPhotos(ingest_pb2.WatchPhotosRequest(), metadata=meta)
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(args.streams) as pool:
            names = set(pool.map(lambda p: upload(ingest, key, p[1], p[0]).photo.name, photos))
        uploaded_s = time.perf_counter() - started
        for event in watch:
            if event.photo.status == photo_pb2.PHOTO_STATUS_INDEXED:
                names.discard(event.photo.name)
            elif event.photo.status == photo_pb2.PHOTO_STATUS_FAILED:
                raise RuntimeError(f"{event.photo.name} failed: {event.photo.status_reason}")
            if not names:
                break
        indexed_s = time.perf_counter() - started
        watch.cancel()
        results["ingest"] = {
            "upload_only_photos_per_s": args.photos / uploaded_s,
            "end_to_end_photos_per_s": args.photos / indexed_s,
            "raw_encode_image_per_s": raw_images_per_s,
            "end_to_end_vs_raw": (args.photos / indexed_s) / raw_images_per_s,
        }

        # Search latency at each size, with text encoding alone side by side.
        metadata = open_metadata(settings)
        owner = open_users(settings).user_by_name("bench").id
        vectors = open_vectors(settings)
        rng = np.random.default_rng(0)
        dim = clip.dimension
        results["search"] = []
        for size in sorted(args.sizes):
            missing = size - vectors.count(model_id)
            for start in range(0, missing, 5000):
                batch = rng.normal(size=(min(5000, missing - start), dim)).astype(np.float32)
                batch /= np.linalg.norm(batch, axis=1, keepdims=True)
                ids = [f"synthetic{size}x{start + i}" for i in range(len(batch))]
                metadata.insert_new_photos([synthetic_photo(photo_id, owner) for photo_id in ids])
                vectors.upsert_many([VectorObject(photo_id, owner, model_id, v)
                                     for photo_id, v in zip(ids, batch)])
            search.SearchPhotos(search_pb2.SearchPhotosRequest(query="warm-up"), metadata=meta)
            # Interleaved, so all three see the same load from the running services.
            search_samples, embed_samples, text_samples = [], [], []
            for i in range(args.queries):
                q = QUERIES[i % len(QUERIES)]
                t0 = time.perf_counter()
                encode_text(q)
                t1 = time.perf_counter()
                embed.EmbedText(embed_pb2.EmbedTextRequest(texts=[q]), metadata=meta)
                t2 = time.perf_counter()
                search.SearchPhotos(search_pb2.SearchPhotosRequest(query=q, page_size=20), metadata=meta)
                t3 = time.perf_counter()
                text_samples.append(t1 - t0)
                embed_samples.append(t2 - t1)
                search_samples.append(t3 - t2)
            s50, s99 = percentiles(search_samples)
            e50, e99 = percentiles(embed_samples)
            r50, r99 = percentiles(text_samples)
            results["search"].append({
                "vectors": vectors.count(model_id), "search_p50_ms": s50, "search_p99_ms": s99,
                "embed_text_grpc_p50_ms": e50, "embed_text_grpc_p99_ms": e99,
                "encode_text_in_process_p50_ms": r50, "encode_text_in_process_p99_ms": r99,
                "search_over_text_encode_p50": s50 / e50})
    finally:
        services.stop()

    ing = results["ingest"]
    print(f"model {args.model} (random weights), {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}")
    print(f"ingest: {args.photos} photos, {args.streams} streams")
    print(f"  upload accepted        {ing['upload_only_photos_per_s']:8.1f} photos/s")
    print(f"  end to end (indexed)   {ing['end_to_end_photos_per_s']:8.1f} photos/s")
    print(f"  raw encode_image       {ing['raw_encode_image_per_s']:8.1f} images/s")
    print(f"  end to end / raw       {ing['end_to_end_vs_raw']:8.2f}")
    print("search (SearchPhotos over gRPC, page_size 20) vs text encoding alone:")
    print(f"  {'vectors':>8} {'search p50':>11} {'p99':>8} {'EmbedText p50':>14} {'p99':>8} "
          f"{'encode_text p50':>16} {'p99':>8} {'ratio p50':>10}")
    for row in results["search"]:
        print(f"  {row['vectors']:>8} {row['search_p50_ms']:>9.1f}ms {row['search_p99_ms']:>6.1f}ms "
              f"{row['embed_text_grpc_p50_ms']:>12.1f}ms {row['embed_text_grpc_p99_ms']:>6.1f}ms "
              f"{row['encode_text_in_process_p50_ms']:>14.1f}ms {row['encode_text_in_process_p99_ms']:>6.1f}ms "
              f"{row['search_over_text_encode_p50']:>10.2f}")
    args.out.mkdir(exist_ok=True)
    (args.out / "benchmark.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
