"""photos.v1.SearchService: natural-language and similar-photo search (`photostore serve search`)."""
