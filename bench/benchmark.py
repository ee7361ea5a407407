"""End-to-end benchmark of the embedded default, with the raw model measured side by side.

  .venv/bin/python bench/benchmark.py [--photos 100] [--sizes 10000 100000 1000000] [--queries 200]
                                      [--idle-seconds 600] [--streams 4] [--keep]

Starts the real services (`photostore up`, default settings) on free ports with a ViT-B-32 of random
weights (same architecture and compute as the pretrained one, which no registry ships), and measures
in ONE run, each figure against its goal:

  1. ingest: upload over gRPC -> searchable (every photo INDEXED, seen through WatchPhotos) and
     -> all stages done (text_state DONE/FAILED/SKIPPED as well), photos/s, against (a) raw torch
     fp32 `encode_image` throughput of the same model in this process and (b) the raw throughput of
     the shipped CLIP image path (embed_svc.model.ClipModel on the default backend) in this process;
     decoding and preprocessing excluded from both, batch size = the service's model_batch_size,
     best of 3 rounds (the cores may be shared).
     Photos: mostly 12 MP JPEGs (3-6 MB) made from the sample photos, some smaller ones, a few with
     rendered text so OCR has work.
  2. CLIP image path: shipped backend vs torch fp32 images/s, and the cosine of their vectors for
     the same preprocessed inputs (minimum over 16 images).
  3. search: SearchPhotos p50/p99 over gRPC at each library size against the query encoding alone
     (the EmbedText calls SearchPhotos makes, issued the same way: concurrently), interleaved query
     by query; and recall@10 of the vector store's search() against an exact numpy scan. The library
     is filled with synthetic clustered vectors (CLIP and text space), metadata rows and keywords.
  4. the first SearchPhotos after --idle-seconds of idleness against the warm p50;
  5. idle memory (RSS, and PSS) of every process of the stack, ~30 s after indexing finished;
  6. start to first search: a second `photostore up` on a fresh data dir with the models' export
     cache of the first start (PHOTOSTORE_MODEL_CACHE_DIR), to the first SearchPhotos that answers
     OK and to the first that answers with vector signals.

Prints a table (figure, goal, PASS/FAIL) and writes everything to bench-results/benchmark.json.
Ctrl-C stops the services. During development use small sizes, e.g.
  --photos 20 --sizes 2000 --queries 20 --idle-seconds 5
"""
from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import io
import json
import math
import os
import platform
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import open_clip
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from photos.v1 import embed_pb2, embed_pb2_grpc, ingest_pb2, ingest_pb2_grpc, photo_pb2  # noqa: E402
from photos.v1 import search_pb2, search_pb2_grpc  # noqa: E402
from photostore.auth import bearer_metadata, service_api_key  # noqa: E402
from photostore.backends import open_metadata, open_users, open_vectors  # noqa: E402
from photostore.backends.base import (  # noqa: E402
    SPACE_CLIP, SPACE_TEXT, STATUS_INDEXED, PhotoRecord, VectorFilter, VectorObject, utcnow)
from embed_svc.runtime import cache_root  # noqa: E402
from photostore.server import make_channel  # noqa: E402
from photostore.settings import Settings  # noqa: E402
from tests.photo_samples import SAMPLE_FILES, upload  # noqa: E402

QUERIES = ["a cat", "a cup of coffee", "an astronaut", "a rocket", "a flower", "a temple",
           "a motorcycle", "family at the beach", "birthday party at night", "snow in the mountains"]
SIGN_TEXTS = ["GRAND OPENING SALE", "Main Street Station", "Welcome to the Harbour Cafe",
              "Platform 4  Departures 10:45", "No Parking Any Time", "Happy Birthday Anna",
              "Museum of Modern Art", "Exit  Ausgang  Sortie"]
GIB = 1024 ** 3
TEXT_STATES_DONE = {photo_pb2.STAGE_STATE_DONE, photo_pb2.STAGE_STATE_FAILED, photo_pb2.STAGE_STATE_SKIPPED}
POPULATE_BATCH = 10_000
RECALL_QUERIES = 200
LONG_RPC_S = 1800  # the first search after a big load reads every vector into the index


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentiles(samples_s: list[float]) -> tuple[float, float]:
    ms = np.asarray(samples_s) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def histogram_sums(urls: dict[str, str]) -> dict[str, tuple[float, float]]:
    """{"process what": (sum of seconds, count)} of the search stages and of every served RPC,
    scraped from each process's /metrics (`urls`: process -> URL)."""
    sums: dict[str, list[float]] = {}
    for process, url in urls.items():
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in ("search_stage_seconds_sum", "search_stage_seconds_count"):
                    what = f"{process} stage {sample.labels['stage']}"
                elif sample.name in ("photostore_grpc_server_handling_seconds_sum",
                                     "photostore_grpc_server_handling_seconds_count"):
                    what = f"{process} {sample.labels['method']}"
                else:
                    continue
                sums.setdefault(what, [0.0, 0.0])[0 if sample.name.endswith("_sum") else 1] += sample.value
    return {what: (total, count) for what, (total, count) in sums.items()}


def mean_ms_between(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]
                    ) -> dict[str, float]:
    """Mean milliseconds of each histogram over the calls made between two scrapes."""
    means = {}
    for what, (total, count) in after.items():
        total0, count0 = before.get(what, (0.0, 0.0))
        if count > count0:
            means[what] = 1000 * (total - total0) / (count - count0)
    return means


def l2n(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# Photos

def make_photos(n: int, seed: int = 0, max_side: int = 0) -> list[dict]:
    """n distinct JPEGs made from the sample photos: ~75% 12 MP (4000x3000, some portrait), ~15%
    smaller (phone screenshots and downsized shots), ~10% (at least one from 5 photos) 12 MP with a
    rendered sign of text. Upscaled random crops with sensor-like noise, so JPEGs are 3-6 MB.
    With max_side, each is then downsized to at most that (1024: the photos of earlier runs)."""
    rng = np.random.default_rng(seed)
    pyrng = random.Random(seed)
    sources = [Image.open(p).convert("RGB") for p in SAMPLE_FILES]
    noise = rng.normal(0, 1, (4000 + 64, 4000 + 64, 1)).astype(np.float32)
    n_text = max(1 if n >= 5 else 0, round(n * 0.1))
    n_small = round(n * 0.15)
    kinds = ["text"] * n_text + ["small"] * n_small + ["12mp"] * (n - n_text - n_small)
    pyrng.shuffle(kinds)
    photos = []
    for i, kind in enumerate(kinds):
        src = sources[i % len(sources)]
        if kind == "small":
            size = pyrng.choice([(1920, 1440), (2048, 1536), (1170, 2532), (1600, 1200)])
        else:
            size = (3000, 4000) if pyrng.random() < 0.1 else (4000, 3000)
        # A random crop of the source with the target's aspect ratio, then upscaled.
        w, h = src.size
        aspect = size[0] / size[1]
        scale = pyrng.uniform(0.75, 1.0)
        cw = min(w, h * aspect) * scale
        ch = cw / aspect
        x0, y0 = pyrng.uniform(0, w - cw), pyrng.uniform(0, h - ch)
        img = src.resize(size, Image.Resampling.BICUBIC, box=(x0, y0, x0 + cw, y0 + ch))
        if kind == "text":
            draw = ImageDraw.Draw(img)
            font = ImageFont.load_default(size=pyrng.choice([110, 140, 170]))
            lines = pyrng.sample(SIGN_TEXTS, 2)
            bx, by = pyrng.randrange(100, 800), pyrng.randrange(200, 1600)
            boxw = max(draw.textlength(line, font=font) for line in lines) + 120
            draw.rectangle((bx, by, bx + boxw, by + 2 * font.size + 200), fill=(245, 245, 235))
            for k, line in enumerate(lines):
                draw.text((bx + 60, by + 60 + k * (font.size + 60)), line, fill=(20, 20, 20), font=font)
        pixels = np.asarray(img, np.float32)
        dx, dy = rng.integers(0, 64, 2)
        pixels += noise[dy:dy + size[1], dx:dx + size[0]] * pyrng.uniform(4, 9)
        buf = io.BytesIO()
        out = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        if max_side:
            out.thumbnail((max_side, max_side))
            size = out.size
        out.save(buf, "JPEG", quality=92)
        photos.append({"filename": f"IMG_{i:05d}.jpg", "data": buf.getvalue(), "kind": kind,
                       "size": size, "text": " / ".join(lines) if kind == "text" else ""})
    return photos


# Raw model throughput, in this process

def timed_batches(encode, inputs: list, batch_size: int, n_images: int, rounds: int = 3) -> float:
    """Images per second of `encode(batch)` over n_images (at least 3 full batches cycled from
    `inputs`), after one warm-up batch: the best of `rounds` rounds, so that a neighbour's burst on
    shared cores does not lower the raw figure (which only makes the ratios against it harder)."""
    batches = max(3, math.ceil(n_images / batch_size))
    cycled = [inputs[i % len(inputs)] for i in range(batches * batch_size)]
    encode(cycled[:batch_size])
    best = 0.0
    for _ in range(rounds):
        started = time.perf_counter()
        for i in range(0, len(cycled), batch_size):
            encode(cycled[i:i + batch_size])
        best = max(best, len(cycled) / (time.perf_counter() - started))
    return best


def measure_models(args, checkpoint: Path, photos: list[dict], settings: Settings, cache_dir: Path | None
                   ) -> dict:
    """(a) torch fp32 encode_image, (b) the shipped ClipModel's image path, and their cosine."""
    batch_size = settings.model_batch_size
    distinct = photos[:64]
    model, _, preprocess = open_clip.create_model_and_transforms(args.model, pretrained=str(checkpoint))
    model.eval()
    tensors = [preprocess(Image.open(io.BytesIO(p["data"])).convert("RGB")) for p in distinct]

    @torch.inference_mode()
    def torch_encode(batch):
        return model.encode_image(torch.stack(batch) if isinstance(batch[0], torch.Tensor)
                                  else torch.from_numpy(np.stack(batch)))

    out: dict = {"batch_size": batch_size, "torch_threads": torch.get_num_threads()}
    log(f"raw torch fp32 encode_image, batch {batch_size}")
    out["torch_fp32_images_per_s"] = timed_batches(torch_encode, tensors, batch_size, len(photos))

    from embed_svc.model import ClipModel
    kwargs = {"model_name": args.model, "model_pretrained": str(checkpoint), "data_dir": settings.data_dir}
    if cache_dir is not None:
        kwargs["model_cache_dir"] = cache_dir
    shipped = ClipModel(Settings(**kwargs))
    log(f"shipped ClipModel: backend {getattr(shipped, 'backend', '?')}; loading (exports once)")
    started = time.perf_counter()
    shipped.load()
    out["shipped_load_s"] = time.perf_counter() - started
    out["shipped_backend"] = getattr(shipped, "backend", "unknown")
    out["shipped_model_id"] = shipped.model_id
    encoder = getattr(shipped, "_encoder", None)
    pixels = [shipped.preprocess_image(p["data"]) for p in distinct]
    if encoder is not None and hasattr(encoder, "encode_images"):
        out["shipped_method"] = ("ClipModel._encoder.encode_images(np.stack(preprocess_image(...))) "
                                 "(preprocessed batch; decode/preprocess excluded)")
        out["shipped_images_per_s"] = timed_batches(lambda b: encoder.encode_images(np.stack(b)), pixels,
                                                    batch_size, len(photos))

        def shipped_vectors(x):
            return l2n(encoder.encode_images(x))
    else:
        out["shipped_method"] = "ClipModel.embed_images(list of JPEG bytes) (includes decode/preprocess)"
        shipped_vectors = None
    log("shipped ClipModel.embed_images (JPEG bytes in: decode and preprocess included)")
    datas = [p["data"] for p in distinct]
    out["shipped_embed_images_per_s"] = timed_batches(shipped.embed_images, datas, batch_size, len(photos),
                                                      rounds=1)
    if shipped_vectors is None:
        out["shipped_images_per_s"] = out["shipped_embed_images_per_s"]
    out["shipped_vs_torch"] = out["shipped_images_per_s"] / out["torch_fp32_images_per_s"]

    # Same preprocessed inputs (the shipped preprocessing) through both.
    same = np.stack([pixels[i % len(pixels)] for i in range(16)])
    exact = l2n(torch_encode(list(same)).numpy())
    if shipped_vectors is not None:
        fast = shipped_vectors(same)
        out["cosine_inputs"] = "16 images preprocessed by the shipped path, encoded by both"
    else:
        fast = np.stack(shipped.embed_images([distinct[i % len(distinct)]["data"] for i in range(16)]))
        exact = l2n(torch_encode([tensors[i % len(tensors)] for i in range(16)]).numpy())
        out["cosine_inputs"] = "16 images: embed_images vs torch on torch-preprocessed inputs"
    cos = np.sum(exact * fast, axis=1)
    out["cosine_min"], out["cosine_mean"] = float(cos.min()), float(cos.mean())
    shipped.close()
    del shipped, encoder, model
    return out


# The stack

def proc_children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def descendants(pid: int) -> list[tuple[int, int]]:
    """(pid, parent) of every process below pid, parents first."""
    tree = proc_children()
    out, todo = [], [pid]
    while todo:
        parent = todo.pop(0)
        for child in sorted(tree.get(parent, [])):
            out.append((child, parent))
            todo.append(child)
    return out


def memory_of(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in bytes; PSS splits shared pages (forked gunicorn workers) between their users."""
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss, pss


def cpu_seconds_of(pid: int) -> float:
    """User + system CPU time the process has used (its own threads, not its children)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


class Services:
    """`photostore up` on free ports; stop() stops it and, if need be, whatever it left behind."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.env = env
        self.log = open(log_path, "wb")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen([str(Path(sys.executable).parent / "photostore"), "up"],
                                     env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, target: str, service: str, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(target) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            while time.monotonic() < deadline:
                self.check_alive()
                try:
                    if stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status == 1:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.2)
        raise TimeoutError(f"{target} {service} not serving")

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"photostore up exited with {self.proc.returncode}; see {self.log.name}")

    def processes(self) -> list[dict]:
        """Every process of the stack with its role and memory."""
        labels = {self.proc.pid: "photostore up"}
        rows = []
        for pid, parent in [(self.proc.pid, 0), *descendants(self.proc.pid)]:
            argv = cmdline(pid)
            if pid in labels:
                label = labels[pid]
            elif "serve" in argv and argv.index("serve") + 1 < len(argv):
                label = argv[argv.index("serve") + 1]
            elif parent in labels and parent != self.proc.pid:
                label = f"{labels[parent]} child"
            else:
                label = " ".join(Path(a).name if i == 0 else a for i, a in enumerate(argv))[:40]
            if any("gunicorn" in a for a in argv):
                label += " (gunicorn master)" if parent == self.proc.pid else ""
            labels[pid] = label
            rss, pss = memory_of(pid)
            rows.append({"pid": pid, "parent": parent, "process": label, "rss_bytes": rss, "pss_bytes": pss,
                         "cpu_s": cpu_seconds_of(pid),
                         "cmdline": " ".join(argv)[:200]})
        # gunicorn workers: children of the gateway process
        gateway = {r["pid"] for r in rows if r["process"].startswith("gateway") and r["parent"] == self.proc.pid}
        for r in rows:
            if r["parent"] in gateway:
                r["process"] = "gateway (gunicorn worker)"
        return rows

    def stop(self) -> None:
        if self.proc.poll() is None:
            left = [pid for pid, _ in descendants(self.proc.pid)]
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            for pid in left:  # children run in their own process groups
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        self.log.close()


def service_env(data_dir: Path, model: str, checkpoint: Path, cache_dir: Path | None) -> tuple[dict, dict]:
    ports = {name: free_port() for name in ("ingest", "embed", "search", "gateway", "worker")}
    env = {**os.environ, "PHOTOSTORE_DATA_DIR": str(data_dir), "PHOTOSTORE_MODEL_NAME": model,
           "PHOTOSTORE_MODEL_PRETRAINED": str(checkpoint),
           **{f"PHOTOSTORE_{k.upper()}_PORT": str(v) for k, v in ports.items()},
           **{f"PHOTOSTORE_{k.upper()}_METRICS_PORT": str(free_port()) for k in ports}}
    for k in ("PHOTOSTORE_INGEST_TARGET", "PHOTOSTORE_EMBED_TARGET", "PHOTOSTORE_SEARCH_TARGET"):
        env.pop(k, None)
    if cache_dir is not None:
        env["PHOTOSTORE_MODEL_CACHE_DIR"] = str(cache_dir)
    return env, {k: f"127.0.0.1:{v}" for k, v in ports.items()}


def add_user(env: dict) -> str:
    out = subprocess.run([str(Path(sys.executable).parent / "photostore"), "users", "add", "bench"], env=env,
                         capture_output=True, text=True, check=True).stdout
    return re.search(r"psk_\S+", out).group(0)


def wait_models(embed, meta, services: Services, timeout: float = 900) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        services.check_alive()
        try:
            models = embed.GetModelInfo(embed_pb2.GetModelInfoRequest(), metadata=meta, timeout=10).models
            if models and all(m.ready for m in models):
                return list(models)
        except grpc.RpcError:
            pass
        time.sleep(0.5)
    raise TimeoutError("models not ready")


# Ingest

class Watcher:
    """Follows WatchPhotos for all of the user's photos: when each first was INDEXED and when its
    later stage (text) first was over."""

    def __init__(self, ingest, meta):
        self.stream = ingest.WatchPhotos(ingest_pb2.WatchPhotosRequest(), metadata=meta)
        self.stream.initial_metadata()  # the watch is live
        self.indexed: dict[str, float] = {}
        self.settled: dict[str, float] = {}
        self.failed: dict[str, str] = {}
        self.text_states: dict[str, int] = {}
        self.ocr_text: dict[str, str] = {}
        self.changed = threading.Condition()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._follow, daemon=True)
        self.thread.start()

    def _follow(self) -> None:
        try:
            for event in self.stream:
                now = time.perf_counter()
                photo = event.photo
                with self.changed:
                    if photo.status == photo_pb2.PHOTO_STATUS_INDEXED:
                        self.indexed.setdefault(photo.name, now)
                        if photo.text_state in TEXT_STATES_DONE:
                            self.settled.setdefault(photo.name, now)
                            self.text_states[photo.name] = photo.text_state
                            self.ocr_text[photo.name] = photo.ocr_text
                    elif photo.status == photo_pb2.PHOTO_STATUS_FAILED:
                        self.failed[photo.name] = photo.status_reason
                        self.settled.setdefault(photo.name, now)
                    self.changed.notify_all()
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                self.error = e
        with self.changed:
            self.changed.notify_all()

    def wait(self, names: set[str], which: dict, timeout: float, services: Services) -> float:
        """The time the last of `names` got into `which`."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not names <= which.keys():
                services.check_alive()
                if self.error is not None:
                    raise RuntimeError(f"WatchPhotos failed: {self.error}")
                if self.failed.keys() & names:
                    raise RuntimeError(f"photos failed to index: {dict(list(self.failed.items())[:5])}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{len(names - which.keys())} of {len(names)} photos not done in time")
                self.changed.wait(1.0)
            return max(which[n] for n in names)

    def close(self) -> None:
        self.stream.cancel()


def run_ingest(args, photos, ingest, meta, key, services: Services) -> dict:
    watcher = Watcher(ingest, meta)
    cpu_before = {p["pid"]: p for p in services.processes()}
    own_cpu_before = time.process_time()
    try:
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(args.streams) as pool:
            responses = list(pool.map(lambda p: upload(ingest, key, p["data"], p["filename"]), photos))
        uploaded = time.perf_counter()
        names = {r.photo.name for r in responses}
        if len(names) != len(photos):
            raise RuntimeError(f"{len(photos) - len(names)} uploads were duplicates")
        log(f"uploaded {len(photos)} photos in {uploaded - started:.1f}s; waiting for indexing")
        searchable = watcher.wait(names, watcher.indexed, args.ingest_timeout, services)
        log(f"all searchable after {searchable - started:.1f}s; waiting for text")
        # CPU each process spent from the first upload until every photo was searchable (the text
        # stage waits for the index stage's backlog, so little of it falls in this window).
        cpu: dict[str, float] = {}
        for p in services.processes():  # processes of one role (gunicorn workers) add up
            if p["pid"] in cpu_before:
                cpu[p["process"]] = cpu.get(p["process"], 0.0) + p["cpu_s"] - cpu_before[p["pid"]]["cpu_s"]
        cpu["benchmark client (uploads, watch)"] = time.process_time() - own_cpu_before
        settled = watcher.wait(names, watcher.settled, args.ingest_timeout, services)
        log(f"all stages done after {settled - started:.1f}s")
    finally:
        watcher.close()
    by_name = {r.photo.name: p for r, p in zip(responses, photos)}
    states = [photo_pb2.StageState.Name(watcher.text_states.get(n, 0)) for n in names]
    text_photos = [n for n in names if by_name[n]["kind"] == "text"]
    return {
        "photos": len(photos), "streams": args.streams,
        "megabytes": sum(len(p["data"]) for p in photos) / 1e6,
        "kinds": {k: sum(p["kind"] == k for p in photos) for k in ("12mp", "small", "text")},
        "upload_s": uploaded - started, "searchable_s": searchable - started, "all_stages_s": settled - started,
        "upload_photos_per_s": len(photos) / (uploaded - started),
        "cpu_ms_per_photo_to_searchable": {k: 1000 * v / len(photos) for k, v in cpu.items()},
        "searchable_photos_per_s": len(photos) / (searchable - started),
        "all_stages_photos_per_s": len(photos) / (settled - started),
        "text_states": {s: states.count(s) for s in sorted(set(states))},
        "text_photos_with_ocr_text": sum(bool(watcher.ocr_text.get(n, "").strip()) for n in text_photos),
        "text_photos": len(text_photos),
        "ocr_sample": {by_name[n]["text"]: watcher.ocr_text.get(n, "") for n in text_photos[:2]},
        "names": sorted(names),
    }


# The synthetic library

class Library:
    """Clustered unit vectors (a mixture of Gaussians in each space; some clusters sit at the
    queries' own vectors, so searches find hits above the cut-offs as in real use) written straight
    into the vector store, with their metadata rows and keywords (filename and labels, as the worker
    writes them)."""

    def __init__(self, settings: Settings, owner: str, clip_model: str, clip_dim: int,
                 text_model: str | None, text_dim: int, query_clip: np.ndarray, query_text: np.ndarray | None,
                 keywords: bool, seed: int = 0):
        self.settings = settings
        self.metadata = open_metadata(settings)
        self.vectors = open_vectors(settings)  # written through, never searched (no index in memory)
        self.owner, self.keywords = owner, keywords
        self.clip_model, self.text_model = clip_model, text_model
        self.rng = np.random.default_rng(seed)
        n_random = 500
        self.clip_centers = np.concatenate([l2n(self.rng.normal(size=(n_random, clip_dim))), query_clip])
        self.text_centers = None if text_model is None else np.concatenate(
            [l2n(self.rng.normal(size=(n_random, text_dim))), query_text])
        # Noise so that a member's cosine to its centre is ~0.5 (s^2 * d = 3).
        self.clip_sigma = math.sqrt(3 / clip_dim)
        self.text_sigma = math.sqrt(3 / text_dim)
        # Cluster weights: a long tail, like a real library (a few topics dominate).
        weights = 1 / np.arange(1, len(self.clip_centers) + 1) ** 0.7
        self.weights = self.rng.permutation(weights / weights.sum())
        from torchvision.models import ResNet50_Weights
        categories = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
        self.cluster_labels = [[categories[j] for j in self.rng.choice(len(categories), 3, replace=False)]
                               for _ in range(len(self.clip_centers))]
        self.clip_chunks: list[np.ndarray] = []  # every synthetic CLIP vector, for the exact scan
        self.ids: list[str] = []
        self.populate_s = 0.0

    @property
    def size(self) -> int:
        return len(self.ids)

    def sample(self, n: int, space: str = SPACE_CLIP) -> tuple[np.ndarray, np.ndarray]:
        cluster = self.rng.choice(len(self.weights), n, p=self.weights)
        centers, sigma = ((self.clip_centers, self.clip_sigma) if space == SPACE_CLIP
                          else (self.text_centers, self.text_sigma))
        return cluster, l2n(centers[cluster] + self.rng.normal(scale=sigma, size=(n, centers.shape[1])))

    def grow_to(self, total: int) -> None:
        started = time.perf_counter()
        while self.size < total:
            n = min(POPULATE_BATCH, total - self.size)
            cluster, clip = self.sample(n)
            text = None
            if self.text_centers is not None:
                text = l2n(self.text_centers[cluster] + self.rng.normal(
                    scale=self.text_sigma, size=(n, self.text_centers.shape[1])))
            ids = [f"synth{self.size + i:08d}" for i in range(n)]
            now = utcnow()
            records, objects = [], []
            for i, photo_id in enumerate(ids):
                labels = [(name, round(float(s), 3)) for name, s in
                          zip(self.cluster_labels[cluster[i]], (0.6, 0.2, 0.1))]
                filename = f"IMG_{self.size + i:07d}.jpg"
                taken = now - dt.timedelta(minutes=int(self.rng.integers(0, 5_000_000)))
                models = [self.clip_model] + ([self.text_model] if text is not None else [])
                records.append(PhotoRecord(
                    id=photo_id, owner=self.owner, filename=filename, sha256=photo_id, content_type="image/jpeg",
                    size_bytes=4_000_000, width=4000, height=3000, blob_key="", thumbnail_key="",
                    created_at=now, updated_at=now, taken_at=taken, status=STATUS_INDEXED, published=True,
                    embedding_model=self.clip_model, labels=labels, embedding_models=models,
                    text_state="done"))
                keywords = " ".join([filename, *(name for name, _ in labels)]) if self.keywords else None
                objects.append(VectorObject(photo_id, self.owner, self.clip_model, clip[i], taken_at=taken,
                                            keywords=keywords))
                if text is not None:
                    objects.append(VectorObject(photo_id, self.owner, self.text_model, text[i], taken_at=taken,
                                                space=SPACE_TEXT))
            self.metadata.insert_new_photos(records)
            self.vectors.upsert_many(objects)
            self.clip_chunks.append(clip)
            self.ids += ids
        self.populate_s += time.perf_counter() - started

    def latest_seq(self) -> int | None:
        db = getattr(self.vectors, "db", None)
        return None if db is None else (db.query("SELECT max(seq) FROM changes")[0][0] or 0)

    def wait_for_service_index(self, latest_seq: int | None, photos: int, timeout: float) -> dict:
        """Waits until the search service's approximate index covers every vector written, where the
        embedded store has one (SqliteVectorStore: a model of exact_below vectors or more gets an ANN
        index, built in the background while searches scan exactly, then saved beside the database
        with the change-log seq it covers). Without one there is nothing to wait for."""
        store = self.vectors
        exact_below, ann_path = getattr(store, "exact_below", None), getattr(store, "_ann_path", None)
        try:
            from photostore.backends.ann_index import AnnIndex
        except ImportError:
            AnnIndex = None
        if AnnIndex is None or exact_below is None or ann_path is None or latest_seq is None:
            return {"ann": False, "index_wait_s": 0.0}
        if photos < exact_below:
            return {"ann": False, "exact_below": exact_below, "index_wait_s": 0.0}
        models = [m for m in (self.clip_model, self.text_model) if m]
        started = time.perf_counter()
        deadline = time.monotonic() + timeout
        while any(AnnIndex.saved_seq(ann_path(m)) < latest_seq for m in models):
            if time.monotonic() > deadline:
                return {"ann": True, "exact_below": exact_below, "index_wait_s": time.perf_counter() - started,
                        "index_confirmed": False}
            time.sleep(2)
        return {"ann": True, "exact_below": exact_below, "index_wait_s": time.perf_counter() - started,
                "index_confirmed": True}

    def recall_at_10(self, real_ids: list[str], n_queries: int = RECALL_QUERIES) -> dict:
        """The store's search() in this process vs an exact numpy scan of the same vectors. A store
        opened afresh loads the ANN index the search service saved and catches up from the change
        log, as a restarted service would (extending an index held since a smaller size would
        build most of a second one here: at 1M that did not fit in memory beside the service)."""
        store = open_vectors(self.settings)
        real = store.get_many(real_ids, SPACE_CLIP)
        ids = np.array(self.ids + list(real))
        matrix = np.concatenate(self.clip_chunks + [np.stack([np.asarray(o.vector, np.float32)
                                                              for o in real.values()])] if real else self.clip_chunks)
        _, queries = self.sample(n_queries)
        flt = VectorFilter(owner=self.owner)
        store.search(queries[0], self.clip_model, flt, 10)  # loads (or builds) this store's index
        if hasattr(store, "wait_for_index"):  # an ANN index built in the background
            store.wait_for_index()
        recalls, latencies = [], []
        for q in queries:
            t0 = time.perf_counter()
            got = [pid for pid, _ in store.search(q, self.clip_model, flt, 10)]
            latencies.append(time.perf_counter() - t0)
            scores = matrix @ q
            exact = ids[np.argpartition(-scores, 9)[:10]]
            recalls.append(len(set(got) & set(exact)) / 10)
        p50, p99 = percentiles(latencies)
        return {"recall_at_10": float(np.mean(recalls)), "recall_min": float(np.min(recalls)),
                "store_search_p50_ms": p50, "store_search_p99_ms": p99, "queries": n_queries,
                "store": store.describe()}


def run_search(args, library: Library, search, embed, meta, service_meta, text_on: bool, real_ids: list[str],
               notes: list[str], metrics_urls: dict[str, str]) -> list[dict]:
    rows = []
    for size in sorted(args.sizes):
        log(f"populating to {size} photos")
        library.grow_to(size - len(real_ids))
        latest_seq = library.latest_seq()
        log(f"populated ({library.populate_s:.0f}s so far); warming up search")
        t0 = time.perf_counter()
        search.SearchPhotos(search_pb2.SearchPhotosRequest(query=QUERIES[0], page_size=20), metadata=meta,
                            timeout=LONG_RPC_S)  # the service reads the new vectors
        first_search_s = time.perf_counter() - t0
        index = library.wait_for_service_index(latest_seq, size, args.index_timeout)
        if index.get("index_confirmed") is False:
            notes.append(f"{size}: the search service's ANN index was not seen saved within "
                         f"{args.index_timeout:g}s; latencies may include exact scans")
        if index["ann"]:
            log(f"search service's ANN index ready after {index['index_wait_s']:.0f}s")
        for q in QUERIES:
            search.SearchPhotos(search_pb2.SearchPhotosRequest(query=q, page_size=20), metadata=meta,
                                timeout=LONG_RPC_S)
        warmup_s = time.perf_counter() - t0
        # In the order SearchPhotos issues them: the sentence encoder first.
        encoders = ([embed_pb2.TEXT_ENCODER_SENTENCE] if text_on else []) + [embed_pb2.TEXT_ENCODER_CLIP]

        def encode_query(q: str) -> None:
            # As SearchPhotos does: every EmbedText call issued at once, then each awaited.
            # With the services' key, as the search service calls (EmbedService is internal).
            calls = [embed.EmbedText.future(embed_pb2.EmbedTextRequest(texts=[q], encoder=e),
                                            metadata=service_meta, timeout=60) for e in encoders]
            for call in calls:
                call.result()

        search_samples, encode_samples, hits = [], [], []
        scraped = histogram_sums(metrics_urls)
        for i in range(args.queries):
            q = QUERIES[i % len(QUERIES)]
            order = (0, 1) if i % 2 == 0 else (1, 0)  # alternate which goes first
            for which in order:
                t0 = time.perf_counter()
                if which == 0:
                    response = search.SearchPhotos(search_pb2.SearchPhotosRequest(query=q, page_size=20),
                                                   metadata=meta, timeout=60)
                    search_samples.append(time.perf_counter() - t0)
                    hits.append(len(response.hits))
                else:
                    encode_query(q)
                    encode_samples.append(time.perf_counter() - t0)
        # Where a search's time goes, as the services measure it (the EmbedText mean counts the
        # benchmark's own calls too).
        stage_ms = mean_ms_between(scraped, histogram_sums(metrics_urls))
        log(f"{size}: mean ms per call: " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(stage_ms.items())))
        s50, s99 = percentiles(search_samples)
        e50, e99 = percentiles(encode_samples)
        log(f"{size}: search p50 {s50:.1f}ms p99 {s99:.1f}ms, encode p50 {e50:.1f}ms; recall")
        recall = library.recall_at_10(real_ids)
        rows.append({"photos": size, "synthetic": library.size, "search_p50_ms": s50, "search_p99_ms": s99,
                     "query_encode_p50_ms": e50, "query_encode_p99_ms": e99, "ratio_p50": s50 / e50,
                     "ratio_p99": s99 / e99, "mean_hits": float(np.mean(hits)), "first_search_s": first_search_s,
                     "warmup_s": warmup_s, "mean_ms_per_call": stage_ms, **index,
                     "populate_s_total": library.populate_s,
                     "query_encoders": [embed_pb2.TextEncoder.Name(e) for e in encoders], **recall})
    return rows


# Start to first search

def start_to_first_search(args, checkpoint: Path, workdir: Path, cache_dir: Path) -> dict:
    data_dir = workdir / "data-start"
    env, targets = service_env(data_dir, args.model, checkpoint, cache_dir)
    meta = bearer_metadata(add_user(env))
    channel = make_channel(targets["search"])  # as the CLI connects
    search = search_pb2_grpc.SearchServiceStub(channel)
    services = Services(env, workdir / "services-start.log")
    first_ok = first_vectors = None
    attempts = 0
    try:
        deadline = time.monotonic() + args.start_timeout
        while time.monotonic() < deadline:
            services.check_alive()
            attempts += 1
            try:
                response = search.SearchPhotos(search_pb2.SearchPhotosRequest(query="a cat", page_size=20),
                                               metadata=meta, timeout=5)
                now = time.perf_counter() - services.started
                first_ok = first_ok if first_ok is not None else now
                if response.models:
                    first_vectors = now
                    models = list(response.models)
                    break
            except grpc.RpcError:
                pass
            time.sleep(0.05)
        else:
            raise TimeoutError(f"no search with vector signals {args.start_timeout}s after the start")
    finally:
        services.stop()
        channel.close()
    return {"first_ok_s": first_ok, "first_with_vectors_s": first_vectors, "models": models,
            "attempts": attempts, "model_cache_dir": str(cache_dir)}


# Report

def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.*)$", cpuinfo, re.M)
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"cpu": model.group(1) if model else platform.processor(), "cores": os.cpu_count(),
            "usable_cores": usable, "memory_gib": os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / GIB,
            "python": platform.python_version(), "torch": torch.__version__}


def table(results: dict) -> list[dict]:
    rows: list[dict] = []

    def add(figure: str, value, unit: str = "", goal: str = "", ok: bool | None = None) -> None:
        text = "n/a" if value is None else (f"{value:.3f}" if isinstance(value, float) and abs(value) < 10
                                             else f"{value:.1f}" if isinstance(value, float) else str(value))
        rows.append({"figure": figure, "value": value, "text": f"{text} {unit}".strip(), "goal": goal,
                     "result": "" if ok is None else ("PASS" if ok else "FAIL")})

    m, ing = results.get("models"), results.get("ingest")
    if m:
        add("raw torch fp32 encode_image", m["torch_fp32_images_per_s"], "img/s")
        add(f"raw shipped CLIP image path ({m['shipped_backend']})", m["shipped_images_per_s"], "img/s")
        add("shipped ClipModel.embed_images (decode+preprocess incl.)", m["shipped_embed_images_per_s"], "img/s")
    if ing:
        add("upload accepted", ing["upload_photos_per_s"], "photos/s")
        add("upload -> searchable", ing["searchable_photos_per_s"], "photos/s")
        add("upload -> all stages done", ing["all_stages_photos_per_s"], "photos/s")
        for process, ms in ing.get("cpu_ms_per_photo_to_searchable", {}).items():
            add(f"  CPU to searchable: {process}", ms, "ms/photo")
    if m and ing:
        r = ing["searchable_photos_per_s"] / m["torch_fp32_images_per_s"]
        add("searchable / raw torch fp32", r, "", ">= 1.5", r >= 1.5)
        r = ing["searchable_photos_per_s"] / m["shipped_images_per_s"]
        add("searchable / raw shipped", r, "", ">= 0.9", r >= 0.9)
        r = ing["all_stages_photos_per_s"] / m["torch_fp32_images_per_s"]
        add("all stages / raw torch fp32", r, "", ">= 0.3", r >= 0.3)
    if m:
        add("CLIP image: shipped / torch fp32 img/s", m["shipped_vs_torch"], "", ">= 2.0", m["shipped_vs_torch"] >= 2.0)
        add("CLIP image: min cosine shipped vs fp32 (16 imgs)", m["cosine_min"], "", ">= 0.999",
            m["cosine_min"] >= 0.999)
    for s in results.get("search", []):
        n = s["photos"]
        add(f"search p50 / p99 @ {n}", f"{s['search_p50_ms']:.1f} / {s['search_p99_ms']:.1f}", "ms")
        add(f"query encoding p50 / p99 @ {n}", f"{s['query_encode_p50_ms']:.1f} / {s['query_encode_p99_ms']:.1f}",
            "ms")
        goal = 1.3 if n >= 1_000_000 else 1.15 if n >= 100_000 else None
        add(f"search / query encoding p50 @ {n}", s["ratio_p50"], "", f"<= {goal}" if goal else "",
            None if goal is None else s["ratio_p50"] <= goal)
        add(f"recall@10 store.search vs exact @ {n}", s["recall_at_10"], "", ">= 0.98", s["recall_at_10"] >= 0.98)
    if (idle := results.get("idle_search")):
        add(f"first search after {idle['idle_s']:g}s idle / warm p50", idle["ratio"], "", "<= 1.5",
            idle["ratio"] <= 1.5)
    if (mem := results.get("idle_memory")):
        for p in mem["processes"]:
            add(f"  idle RSS {p['process']} (pid {p['pid']})", p["rss_bytes"] / 2**20, "MiB")
        add("idle RSS total of the stack", mem["total_rss_bytes"] / GIB, "GiB", "<= 2 GB",
            mem["total_rss_bytes"] <= 2e9)
        add("idle PSS total of the stack (shared pages split)", mem["total_pss_bytes"] / GIB, "GiB")
        if (later := mem.get("embed_after_idle")):
            # The text stage's models unload after PHOTOSTORE_TEXT_STAGE_MODELS_TTL_SECONDS (300).
            embed_before = sum(p["rss_bytes"] for p in mem["processes"] if p["process"] == "embed")
            add(f"  idle RSS embed after {later['idle_s']:g}s without traffic", later["rss_bytes"] / 2**20, "MiB")
            total = mem["total_rss_bytes"] - embed_before + later["rss_bytes"]
            add(f"idle RSS total of the stack, embed after {later['idle_s']:g}s", total / GIB, "GiB", "<= 2 GB",
                total <= 2e9)
    if (st := results.get("start")):
        ok = st.get("first_ok_s")
        add("start -> first search OK", ok, "s", "<= 10 s", ok is not None and ok <= 10)
        vec = st.get("first_with_vectors_s")
        add("start -> first search with vector signals", vec, "s", "<= 10 s", vec is not None and vec <= 10)
    elif "start_skipped" in results:
        add("start -> first search", None, "", "<= 10 s (skipped: " + results["start_skipped"] + ")")
    return rows


def print_report(results: dict) -> None:
    mach = results["machine"]
    print()
    print("=" * 100)
    print(f"photostore end-to-end benchmark   {results['date']}")
    print(f"machine: {mach['cpu']}, {mach['cores']} cores ({mach['usable_cores']} usable), "
          f"{mach['memory_gib']:.0f} GiB; torch {mach['torch']}, python {mach['python']}")
    print(f"command: {results['command']}")
    m = results.get("models")
    if m:
        print(f"model: {results['model']} (random weights), shipped backend {m['shipped_backend']} "
              f"({m['shipped_model_id']}), batch {m['batch_size']}, torch threads {m['torch_threads']}")
        print(f"shipped raw figure from: {m['shipped_method']}")
    if (ing := results.get("ingest")):
        print(f"ingest: {ing['photos']} photos ({ing['kinds']}), {ing['megabytes']:.0f} MB, {ing['streams']} "
              f"upload streams; text states {ing['text_states']}; OCR found text in "
              f"{ing['text_photos_with_ocr_text']}/{ing['text_photos']} photos with rendered text")
    if results.get("search"):
        s = results["search"][-1]
        print(f"search: page_size 20, {args_queries(results)} queries per size, query encoding = "
              f"{' + '.join(s['query_encoders'])} EmbedText concurrently; vector store: {s['store']}; "
              f"keywords {'on' if results['keywords'] else 'off'}")
    print("-" * 100)
    print(f"{'figure':<58} {'value':>18}  {'goal':<22} result")
    for row in results["table"]:
        print(f"{row['figure']:<58} {row['text']:>18}  {row['goal']:<22} {row['result']}")
    for row in results.get("search", []):
        if row.get("mean_ms_per_call"):
            print(f"server-side mean ms per call @ {row['photos']}: " + ", ".join(
                f"{what} {ms:.1f}" for what, ms in sorted(row["mean_ms_per_call"].items())))
    print("=" * 100)
    for note in results.get("notes", []):
        print(f"note: {note}")


def args_queries(results: dict) -> int:
    return results["options"]["queries"]


# Main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--photos", type=int, default=100, help="photos to upload (default 100)")
    parser.add_argument("--streams", type=int, default=4, help="parallel uploads (default 4)")
    parser.add_argument("--max-side", type=int, default=0, metavar="PX",
                        help="downsize the photos to at most PX (1024: the photos of runs before 2026-12-01)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000],
                        help="library sizes for the search figures (default 10000 100000 1000000)")
    parser.add_argument("--queries", type=int, default=200, help="queries per size (default 200)")
    parser.add_argument("--idle-seconds", type=float, default=600,
                        help="idle time before the first-search-after-idle figure (default 600)")
    parser.add_argument("--settle-seconds", type=float, default=30,
                        help="idle time after indexing before memory is measured (default 30)")
    parser.add_argument("--no-keywords", dest="keywords", action="store_false",
                        help="synthetic photos without keywords (filename + labels), so no keyword hits")
    parser.add_argument("--skip-start", action="store_true", help="skip the start-to-first-search figure")
    parser.add_argument("--ingest-timeout", type=float, default=3600)
    parser.add_argument("--start-timeout", type=float, default=300)
    parser.add_argument("--index-timeout", type=float, default=3600,
                        help="longest wait for the search service's ANN index after each load")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (data, logs) afterwards")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    args = parser.parse_args()

    def on_sigterm(*_):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_sigterm)

    workdir = Path(tempfile.mkdtemp(prefix="photostore-bench-"))
    results: dict = {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, *sys.argv]), "machine": machine(), "model": args.model,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "keywords": args.keywords, "workdir": str(workdir), "notes": []}
    services: Services | None = None
    try:
        # The user's export cache, as every start of the product uses it (the first run exports).
        cache_dir = cache_root(Settings())
        log(f"work dir {workdir}; writing a random-weight {args.model} checkpoint")
        checkpoint = workdir / f"{args.model}-random.pt"
        torch.manual_seed(0)
        torch.save(open_clip.create_model(args.model, pretrained=None).state_dict(), checkpoint)
        log(f"making {args.photos} photos")
        photos = make_photos(args.photos, max_side=args.max_side)
        settings = Settings(data_dir=workdir / "data")
        results["models"] = measure_models(args, checkpoint, photos, settings, cache_dir)
        m = results["models"]
        log(f"torch fp32 {m['torch_fp32_images_per_s']:.1f} img/s, shipped {m['shipped_backend']} "
            f"{m['shipped_images_per_s']:.1f} img/s, min cosine {m['cosine_min']:.5f}")

        env, targets = service_env(settings.data_dir, args.model, checkpoint, cache_dir)
        key = add_user(env)
        meta = bearer_metadata(key)
        service_meta = bearer_metadata(service_api_key(settings))
        log("starting photostore up")
        services = Services(env, workdir / "services.log")
        for name in ("ingest", "search", "worker"):
            services.wait_ready(targets[name], "")
        services.wait_ready(targets["embed"], "photos.v1.EmbedService")
        ingest = ingest_pb2_grpc.IngestServiceStub(grpc.insecure_channel(targets["ingest"]))
        search = search_pb2_grpc.SearchServiceStub(grpc.insecure_channel(targets["search"]))
        embed = embed_pb2_grpc.EmbedServiceStub(grpc.insecure_channel(targets["embed"]))
        models = wait_models(embed, meta, services)
        clip = next(m for m in models if m.role == embed_pb2.MODEL_ROLE_CLIP)
        sentence = next((m for m in models if m.role == embed_pb2.MODEL_ROLE_SENTENCE), None)
        results["service_models"] = {embed_pb2.ModelRole.Name(m.role): m.model for m in models}
        log(f"services up after {time.perf_counter() - services.started:.1f}s: {results['service_models']}")

        results["ingest"] = run_ingest(args, photos, ingest, meta, key, services)
        real_ids = [n.removeprefix("photos/") for n in results["ingest"].pop("names")]

        log(f"idle {args.settle_seconds:g}s, then memory of every process")
        time.sleep(args.settle_seconds)
        procs = services.processes()
        results["idle_memory"] = {"processes": procs, "total_rss_bytes": sum(p["rss_bytes"] for p in procs),
                                  "total_pss_bytes": sum(p["pss_bytes"] for p in procs)}

        text_on = sentence is not None and settings.search_weight_text > 0
        owner = open_users(settings).user_by_name("bench").id

        def query_vectors(encoder) -> np.ndarray:
            r = embed.EmbedText(embed_pb2.EmbedTextRequest(texts=QUERIES, encoder=encoder),
                                metadata=service_meta, timeout=120)
            return l2n(np.array([e.values for e in r.embeddings], np.float32))
        library = Library(settings, owner, clip.model, clip.dimension, sentence.model if sentence else None,
                          sentence.dimension if sentence else 384, query_vectors(embed_pb2.TEXT_ENCODER_CLIP),
                          query_vectors(embed_pb2.TEXT_ENCODER_SENTENCE) if sentence else None, args.keywords)
        metrics_urls = {name: f"http://127.0.0.1:{env[f'PHOTOSTORE_{name.upper()}_METRICS_PORT']}/metrics"
                        for name in ("search", "embed", "ingest")}
        results["search"] = run_search(args, library, search, embed, meta, service_meta, text_on, real_ids,
                                       results["notes"], metrics_urls)

        log(f"idle {args.idle_seconds:g}s, then embed's memory and one search")
        time.sleep(args.idle_seconds)
        # Only embed's: the search service now holds the synthetic library.
        results["idle_memory"]["embed_after_idle"] = {
            "idle_s": args.idle_seconds,
            "rss_bytes": sum(p["rss_bytes"] for p in services.processes() if p["process"] == "embed")}
        scraped = histogram_sums(metrics_urls)
        t0 = time.perf_counter()
        search.SearchPhotos(search_pb2.SearchPhotosRequest(query="a red bicycle", page_size=20), metadata=meta,
                            timeout=600)
        first = (time.perf_counter() - t0) * 1000
        first_parts = mean_ms_between(scraped, histogram_sums(metrics_urls))
        # The next few, for what the first one alone paid.
        after = []
        for query in QUERIES[:5]:
            t0 = time.perf_counter()
            search.SearchPhotos(search_pb2.SearchPhotosRequest(query=query, page_size=20), metadata=meta,
                                timeout=600)
            after.append((time.perf_counter() - t0) * 1000)
        warm = results["search"][-1]["search_p50_ms"]
        results["idle_search"] = {"idle_s": args.idle_seconds, "first_ms": first, "warm_p50_ms": warm,
                                  "next_ms": after, "photos": results["search"][-1]["photos"],
                                  "ratio": first / warm, "first_ms_per_call": first_parts}
        log(f"first search after idle {first:.1f} ms, the next {', '.join(f'{t:.1f}' for t in after)} ms; "
            "its parts: " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(first_parts.items())))
        del library
        services.stop()
        services = None

        if args.skip_start:
            results["start_skipped"] = "--skip-start"
        else:
            log("second start: fresh data dir, same model cache")
            results["start"] = start_to_first_search(args, checkpoint, workdir, cache_dir)
    except KeyboardInterrupt:
        print("\ninterrupted; stopping the services", file=sys.stderr)
        results["notes"].append("interrupted: partial results")
    except BaseException:
        args.keep = True
        for log_file in sorted(workdir.glob("services*.log")):
            print(f"--- last lines of {log_file}", file=sys.stderr)
            print("\n".join(log_file.read_text(errors="replace").splitlines()[-30:]), file=sys.stderr)
        raise
    finally:
        if services is not None:
            services.stop()
    results["table"] = table(results)
    print_report(results)
    args.out.mkdir(exist_ok=True)
    (args.out / "benchmark.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"written to {args.out / 'benchmark.json'}")
    if args.keep:
        print(f"work dir kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
