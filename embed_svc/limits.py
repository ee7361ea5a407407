"""What one EmbedService call may carry: shared by the service and its callers (the worker imports
this, not the models, so it runs without torch)."""
MAX_TEXTS = 256
MAX_IMAGES = 64
