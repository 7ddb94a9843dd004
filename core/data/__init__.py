"""Data: torch-free indexing (image_sources) and Lightning DataModules (images)."""
