"""The homepage ranking HTTP service."""
