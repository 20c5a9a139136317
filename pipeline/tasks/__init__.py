"""The Celery app and its thin stage tasks."""
