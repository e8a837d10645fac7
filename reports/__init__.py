"""HTML (and later JSON) reports rendered from the results store."""
