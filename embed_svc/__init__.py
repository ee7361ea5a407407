"""EmbedService (open_clip image/text encoders, `photostore serve embed`) and the embed worker
(`photostore serve worker`)."""
