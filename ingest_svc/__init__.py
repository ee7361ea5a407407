"""IngestService: receives, stores, lists, deletes and streams photos (python -m ingest_svc)."""
