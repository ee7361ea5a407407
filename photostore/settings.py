"""Settings for every process, read from PHOTOSTORE_* environment variables (or a .env file)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


class BlobsSettings(BaseModel):
    """PHOTOSTORE_BLOBS__*: where originals and thumbnails live."""
    backend: Literal["embedded", "s3"] = "embedded"
    # S3 (MinIO in production; any S3 API): endpoint host:port, without scheme.
    s3_endpoint: str = "127.0.0.1:9000"
    s3_access_key: SecretStr = SecretStr("")
    s3_secret_key: SecretStr = SecretStr("")
    s3_bucket: str = "photostore"
    s3_region: str = ""
    s3_secure: bool = False
    # Base URL of the same S3 service as browsers reach it (https://s3.example.com), for presigned
    # download links; empty: the endpoint above.
    s3_public_url: str = ""
    # Lifetime of the presigned GET URLs the gateway redirects browsers to.
    presign_expiry_seconds: int = 900


class MetadataSettings(BaseModel):
    """PHOTOSTORE_METADATA__*: photo documents, users and API keys (owned by ingest)."""
    backend: Literal["embedded", "mongodb"] = "embedded"
    mongodb_uri: SecretStr = SecretStr("mongodb://127.0.0.1:27117/")
    mongodb_database: str = "photostore"


class EventsSettings(BaseModel):
    """PHOTOSTORE_EVENTS__*: the event log between ingest and the embed workers."""
    backend: Literal["embedded", "kafka"] = "embedded"
    # Partitions per topic: the most consumers of one group that get work at once.
    partitions: int = 4
    kafka_bootstrap_servers: str = "127.0.0.1:19092"
    # Put before every topic name, so several deployments can share one Kafka cluster.
    topic_prefix: str = ""
    # A member whose process stops heartbeating (killed, hung host) loses its partitions after this.
    session_timeout_ms: int = 10_000
    # A live member that has not polled for this long (a batch stuck that long) loses them too.
    max_poll_interval_ms: int = 300_000
    # How long a send waits for the log to acknowledge before it fails.
    send_timeout_s: float = 15.0
    # Managed clusters: SASL_SSL with a SCRAM or PLAIN user, or SSL.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = ""
    kafka_sasl_username: str = ""
    kafka_sasl_password: SecretStr = SecretStr("")


class VectorsSettings(BaseModel):
    """PHOTOSTORE_VECTORS__*: the search index (vectors and keywords)."""
    backend: Literal["embedded", "weaviate"] = "embedded"
    weaviate_host: str = "127.0.0.1"
    weaviate_http_port: int = 8090
    weaviate_grpc_port: int = 8091
    # TLS on both ports (a managed Weaviate).
    weaviate_secure: bool = False
    weaviate_api_key: SecretStr = SecretStr("")
    weaviate_collection: str = "Photo"


class TlsSettings(BaseModel):
    """PHOTOSTORE_TLS__*: TLS on every gRPC server and client of the services (off: plaintext)."""
    # This process's certificate chain and key (PEM): its gRPC servers present them, and so do its
    # clients to servers that require client certificates. Without them the servers are plaintext.
    cert_file: Path | None = None
    key_file: Path | None = None
    # CA bundle (PEM) clients verify servers with (and servers verify clients with, below); a
    # client uses TLS once this or cert_file is set; empty: the system's roots.
    ca_file: Path | None = None
    # Mutual TLS: servers accept only clients with a certificate signed by ca_file.
    client_auth: bool = False

    @property
    def server(self) -> bool:
        return bool(self.cert_file and self.key_file)

    @property
    def client(self) -> bool:
        return bool(self.ca_file or self.cert_file)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PHOTOSTORE_", env_file=".env", extra="ignore",
                                      env_nested_delimiter="__")

    data_dir: Path = Field(default=Path.home() / ".local" / "share" / "photostore")
    # One backend per port: "embedded" (this machine, no servers) or a scale-out engine.
    blobs: BlobsSettings = BlobsSettings()
    metadata: MetadataSettings = MetadataSettings()
    events: EventsSettings = EventsSettings()
    vectors: VectorsSettings = VectorsSettings()
    tls: TlsSettings = TlsSettings()

    host: str = "127.0.0.1"
    ingest_port: int = 7061
    embed_port: int = 7062
    search_port: int = 7063
    gateway_port: int = 8000
    # The embed worker's grpc.health.v1 port (0: none): NOT_SERVING when its loop is stuck.
    worker_port: int = 7064
    # Each process serves Prometheus /metrics on its own port (0: none); in containers, where
    # each process has the pod's network to itself, they may all be one port (9100).
    ingest_metrics_port: int = 7161
    embed_metrics_port: int = 7162
    search_metrics_port: int = 7163
    worker_metrics_port: int = 7164
    gateway_metrics_port: int = 7165
    # Logs on stderr: json (one object per line), text, or auto (text at a terminal, else json).
    log_format: Literal["auto", "json", "text"] = "auto"
    # One log line per RPC and HTTP request, with its request id; `photostore up` turns it off
    # (a person reads that terminal) unless it is set.
    access_log: bool = True
    # OTLP/HTTP collector for traces (http://collector:4318); empty: OTEL_EXPORTER_OTLP_ENDPOINT, else none.
    otlp_endpoint: str = ""
    # Gateway processes (gunicorn) and threads in each; a live-status stream holds a thread, so
    # each process takes at most gateway_max_event_streams of them and answers 503 beyond. One
    # process on one machine (each costs ~50 MB idle); compose and the chart run two.
    gateway_workers: int = 1
    gateway_threads: int = 32
    gateway_max_event_streams: int = 24
    # Where each service is reached; default host:port above.
    ingest_target: str | None = None
    embed_target: str | None = None
    search_target: str | None = None
    grpc_max_workers: int = 32
    # Key services use to call each other; default: one kept in data_dir/service.key.
    service_api_key: str | None = None
    # Secret that seals page tokens; default: derived from the service key. Every replica of a
    # service must share it.
    token_secret: str | None = None
    # How long search and embed trust an answer of the ingest service's key check.
    auth_cache_seconds: float = 30.0
    # A browser session ends after this long unused (its last use is recorded at most once a minute).
    session_idle_seconds: float = 12 * 3600
    # ... and this long after sign-in in any case.
    session_max_age_seconds: float = 7 * 24 * 3600
    shutdown_grace_seconds: float = 10.0
    # A server asks each client connection to reconnect after this long (in-flight calls and
    # streams finish first), so clients re-resolve dns:/// targets and reach new replicas.
    grpc_max_connection_age_seconds: float = 300.0
    # Embedded vector index (sqlite_vectors): filtered candidate sets below this are scanned exactly.
    vector_exact_below: int = 20_000
    # HNSW search breadth (efSearch) of the embedded ANN index; higher: better recall, slower.
    vector_ann_ef_search: int = 256

    # Streams per user and per ingest process: beyond them a call fails at once with
    # RESOURCE_EXHAUSTED, so one user cannot hold the threads every other user needs.
    max_uploads_per_user: int = 8
    max_concurrent_uploads: int = 32
    max_watches_per_user: int = 16
    max_concurrent_watches: int = 64
    # An upload stream that sends nothing for this long is cancelled.
    upload_idle_timeout_seconds: float = 30.0
    # Pixels a process decodes at once (ingest, worker, embed); a larger image decodes alone.
    decode_budget_pixels: int = 100_000_000

    # Upload limits.
    max_upload_bytes: int = 100 * MIB
    max_image_pixels: int = 100_000_000
    max_chunk_bytes: int = 1 * MIB
    thumbnail_px: int = 320
    # Ingest stores a copy of each photo with this short side (never upscaled), made from the one
    # decode that checks the upload; the index stage reads it instead of decoding the original
    # again. A CLIP model with a larger input reads the original.
    model_copy_px: int = 256

    # open_clip model: a hub tag for `pretrained`, or a local checkpoint path.
    model_name: str = "ViT-B-32"
    model_pretrained: str = "laion2b_s34b_b79k"
    # Extra directory of open_clip model config JSON files (custom architectures).
    model_config_dir: Path | None = None
    model_retry_seconds: float = 30.0
    model_batch_size: int = 32
    # How long a batch waits for more items after its first; 0: it takes what is queued (a
    # request's images come together), so a lone query never waits.
    model_batch_wait_ms: float = 0.0
    torch_threads: int = 0  # 0: torch's default

    # Second signal from models whose weights ship in packages: ImageNet labels, OCR text and a
    # sentence-model vector of both. Off: the EmbedService runs CLIP only.
    signals_enabled: bool = True
    label_min_score: float = 0.05  # labels below this probability are dropped (textures give junk)
    label_top_k: int = 5  # labels kept per photo
    label_vector_top_k: int = 5  # ImageNet labels that go into the text vector
    ocr_enabled: bool = True
    ocr_min_confidence: float = 0.5  # OCR lines below this recognition score are dropped
    # Objects with counts ("2 dogs", SSD-MobileNet-v2 COCO), in the OCR stage; needs ocr_enabled.
    objects_enabled: bool = True
    object_min_score: float = 0.6  # sample photos: true objects score >= 0.74, false ones <= 0.59
    # OCR and the object detector (the text stage's models, ~300 MiB) are unloaded after this long
    # unused and loaded again, in a second or two, when photos next wait for them; 0 keeps them.
    text_stage_models_ttl_seconds: float = 300.0
    colour_min_share: float = 0.1  # colour names covering less of the photo are dropped
    document_min_words: int = 20  # OCR text of this many words also tags the photo "document"
    # A sentence-transformers model directory; default: the packaged all-MiniLM-L6-v2.
    sentence_model_path: Path | None = None
    # CLIP runtime; auto: openvino-bf16 on CPUs with bf16, else onnx-int8, else torch (exact fp32).
    clip_backend: Literal["auto", "openvino-bf16", "onnx-int8", "torch"] = "auto"
    label_backend: Literal["onnx", "torch"] = "onnx"  # same labels; onnx is ~5x faster
    sentence_backend: Literal["onnx", "torch"] = "onnx"  # onnx: no torch in the embed process
    ocr_backend: Literal["openvino", "onnxruntime"] = "openvino"  # same text; openvino is faster
    # OCR reads a copy of at most this side, never upscaled; 2000 finds small text on big photos.
    ocr_max_side: int = 1280
    # Exported models, cached by checkpoint and backend; default: $XDG_CACHE_HOME/photostore/models
    # (~/.cache), shared by every data dir.
    model_cache_dir: Path | None = None

    # Events older than this that every consumer group has committed are dropped.
    event_retention_hours: float = 168.0
    # How often ingest re-sends the events of stored photos whose first send failed (the outbox).
    outbox_interval_seconds: float = 30.0
    # Photos stay in the trash this long, then ingest purges them (blobs, vectors, row) on its
    # purge loop, which runs every trash_purge_interval_seconds.
    trash_retention_days: float = 30.0
    trash_purge_interval_seconds: float = 3600.0

    # Near-duplicates (photostore/duplicates.py): photos whose perceptual hashes differ in at
    # most this many of 64 bits look alike (docs/ARCHITECTURE.md has the measured figures:
    # re-saved and resized copies 0-4 bits, 2 % crops up to 12, different photos 20 or more).
    near_duplicate_max_distance: int = 10
    # Photos whose CLIP vectors have at least this cosine are grouped too, for owners with at
    # most near_duplicate_clip_max_photos photos (the vectors are read whole); 0 photos: off.
    near_duplicate_min_cosine: float = 0.95
    near_duplicate_clip_max_photos: int = 5000

    # Embed worker.
    worker_batch_size: int = 16
    worker_max_attempts: int = 5
    worker_backoff_seconds: float = 1.0
    worker_backoff_max_seconds: float = 30.0

    # Search fusion (docs/SEARCH.md): a photo at or above one signal's cut-off is a candidate; its
    # score is the probability of relevance that the calibration gives its signals' scores.
    # A weight of 0 switches a signal off; otherwise it scales the signal's fitted terms (1: as fitted).
    search_weight_clip: float = 1.0
    search_weight_text: float = 1.0
    search_weight_keyword: float = 1.0
    search_min_clip: float = 0.2
    search_min_text: float = 0.3
    # Share of the query's words found in the photo's filename, labels or OCR text.
    search_min_keyword: float = 0.0
    # Hits below this probability of relevance are left out (a request's min_score overrides it);
    # unset: the threshold fitted with the calibration.
    search_min_probability: float | None = None
    # The fitted calibration (bench/retrieval.py --fit); unset: search_svc/calibration.json.
    search_calibration_path: Path | None = None
    # After this long without a search, the search service runs one internal query (and again
    # after each such pause), so the next search finds models, connections and indexes warm; 0: off.
    search_keep_warm_seconds: float = 60.0
    # How old the camera makes and places that query words are matched against may be (per user,
    # from SummarizePhotos; refreshed in the background after this); 0: asked on every search.
    search_vocabulary_seconds: float = 300.0

    def target(self, service: str) -> str:
        explicit = getattr(self, f"{service}_target")
        return explicit or f"{self.host}:{getattr(self, f'{service}_port')}"

    @property
    def users_path(self) -> Path:
        return self.data_dir / "users.sqlite3"

    @property
    def metadata_path(self) -> Path:
        return self.data_dir / "metadata.sqlite3"

    @property
    def events_path(self) -> Path:
        return self.data_dir / "events.sqlite3"

    @property
    def vectors_path(self) -> Path:
        return self.data_dir / "vectors.sqlite3"

    @property
    def blobs_dir(self) -> Path:
        return self.data_dir / "blobs"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
