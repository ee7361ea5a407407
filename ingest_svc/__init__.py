"""IngestService: receives, stores, lists, deletes and streams photos (`photostore serve ingest`)."""
