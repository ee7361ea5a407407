"""photos.v1.SearchService: natural-language and similar-photo search (`python -m search_svc`)."""
