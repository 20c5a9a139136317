"""The SQS listener: S3 ObjectCreated events in, Celery chains out."""
