"""Adapters to S3 and Redis, and the pure key layout."""
