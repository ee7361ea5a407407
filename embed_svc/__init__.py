"""EmbedService (open_clip image/text encoders, python -m embed_svc) and the embed worker
(python -m embed_svc.worker)."""
