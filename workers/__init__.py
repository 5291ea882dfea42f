"""Celery app and the code of each background job kind."""
