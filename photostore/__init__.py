"""Shared core of Smart Photo Storage: settings, auth, gRPC plumbing and storage backends."""
