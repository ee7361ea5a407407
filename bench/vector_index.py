"""Embedded vector index: exact scan against the faiss HNSW path of SqliteVectorStore.search().

  .venv/bin/python bench/vector_index.py [--sizes 10000 100000 1000000] [--queries 200] [--json PATH]

Data: CLIP-like 512-d unit vectors, a mixture of 3000 Gaussian clusters (Pareto-sized) in a 64-d
latent space, projected to 512 dimensions with a shared mean direction and isotropic noise (nearest
neighbour cosine ~0.84, mean pairwise ~0.27, as CLIP image embeddings); queries are held-out draws.
One owner holds all photos; a tenth of them are "canon" (a narrower filter, measured separately).
Per size it prints search latency p50/p99 (exact and ANN), recall@10 of ANN against exact, the
ANN build time (first search, synchronous), the reload time from the saved file, and its size.
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from photostore.backends.base import VectorFilter  # noqa: E402
from photostore.backends.sqlite_vectors import SqliteVectorStore  # noqa: E402

DIM, MODEL = 512, "bench-clip"


def clustered(n: int, seed: int, dim: int = DIM, clusters: int = 3000, latent: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)  # the same clusters for every draw
    basis = rng.normal(size=(latent, dim)).astype(np.float32) / np.sqrt(latent)
    centers = rng.normal(size=(clusters, latent)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    weights = rng.pareto(1.0, clusters) + 1
    weights /= weights.sum()
    mean = rng.normal(size=dim).astype(np.float32)
    mean *= 0.7 / np.linalg.norm(mean)
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        z = centers[rng.choice(clusters, m, p=weights)]
        z += rng.normal(scale=0.6 / np.sqrt(latent), size=(m, latent)).astype(np.float32)
        out[start:start + m] = z @ basis + mean + rng.normal(scale=0.25 / np.sqrt(dim), size=(m, dim))
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def populate(path: Path, n: int) -> None:
    """Writes n vectors straight into the store's tables, in big transactions."""
    SqliteVectorStore(path).close()  # the schema
    conn = sqlite3.connect(path, isolation_level=None)
    for start in range(0, n, 100_000):
        vectors = clustered(min(100_000, n - start), seed=1 + start)
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO changes (seq, photo_id, space, op) VALUES (?, ?, 'clip', 'upsert')",
                         ((start + i + 1, f"p{start + i}") for i in range(len(vectors))))
        conn.executemany(
            "INSERT INTO objects VALUES (?, 'clip', 'u', ?, ?, ?, ?, ?, '', ?)",
            ((f"p{start + i}", MODEL, DIM, v.tobytes(), 1.7e9 + start + i,
              "canon" if (start + i) % 10 == 0 else "nikon", start + i + 1) for i, v in enumerate(vectors)))
        conn.execute("COMMIT")
    conn.close()


def timed_searches(store, queries, flt) -> tuple[list[list[str]], float, float]:
    hits, ms = [], []
    for q in queries:
        started = time.perf_counter()
        hits.append([photo_id for photo_id, _ in store.search(q, MODEL, flt, 10)])
        ms.append((time.perf_counter() - started) * 1000)
    return hits, float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def recall(found: list[list[str]], exact: list[list[str]]) -> float:
    return float(np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, exact)]))


def measure(n: int, queries: np.ndarray) -> dict:
    with tempfile.TemporaryDirectory(prefix="vector-bench-") as tmp:
        path = Path(tmp) / "vectors.sqlite3"
        started = time.perf_counter()
        populate(path, n)
        row = {"size": n, "populate_s": time.perf_counter() - started}
        exact = SqliteVectorStore(path, exact_below=10 ** 12)
        started = time.perf_counter()
        exact.search(queries[0], MODEL, VectorFilter("u"), 10)
        row["load_s"] = time.perf_counter() - started
        ann = SqliteVectorStore(path, background_build=False)
        started = time.perf_counter()
        ann.search(queries[0], MODEL, VectorFilter("u"), 10)
        row["build_s"] = time.perf_counter() - started - row["load_s"]
        files = list(Path(tmp).glob("*.ann"))
        row["index_mb"] = files[0].stat().st_size / 2 ** 20 if files else 0.0
        for name, flt in (("all", VectorFilter("u")), ("canon", VectorFilter("u", camera_make="canon"))):
            truth, row[f"exact_{name}_p50_ms"], row[f"exact_{name}_p99_ms"] = timed_searches(exact, queries, flt)
            found, row[f"ann_{name}_p50_ms"], row[f"ann_{name}_p99_ms"] = timed_searches(ann, queries, flt)
            row[f"recall_{name}"] = recall(found, truth)
        exact.close()
        ann.close()
        reopened = SqliteVectorStore(path, background_build=False)
        started = time.perf_counter()
        reopened.search(queries[0], MODEL, VectorFilter("u"), 10)
        row["reload_s"] = time.perf_counter() - started
        reopened.close()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    queries = clustered(args.queries, seed=10 ** 9)
    header = ("size", "exact p50/p99 ms", "ANN p50/p99 ms", "recall@10", "canon: exact / ANN p50 ms, recall",
              "build s", "reload s", "index MB")
    print(" | ".join(header), flush=True)
    rows = []
    for n in args.sizes:
        r = measure(n, queries)
        rows.append(r)
        print(" | ".join([
            f"{n:,}", f"{r['exact_all_p50_ms']:.1f}/{r['exact_all_p99_ms']:.1f}",
            f"{r['ann_all_p50_ms']:.1f}/{r['ann_all_p99_ms']:.1f}", f"{r['recall_all']:.3f}",
            f"{r['exact_canon_p50_ms']:.1f} / {r['ann_canon_p50_ms']:.1f}, {r['recall_canon']:.3f}",
            f"{r['build_s']:.1f}", f"{r['reload_s']:.1f}", f"{r['index_mb']:.0f}"]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
