"""Gunicorn settings for an I/O-bound JSON + dashboard app (`gunicorn -c python:web.gunicorn_conf`).

gthread workers: requests mostly wait on Postgres, and SSE streams hold a thread each. No
preload: each worker builds its own connection pool after the fork. The graceful timeout stays
under the 30 s that Heroku and Render allow between SIGTERM and SIGKILL.
"""

import os

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
preload_app = False
timeout = 30
graceful_timeout = 25
keepalive = 5
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None  # "-" for stdout
errorlog = "-"
