"""Gunicorn settings for an I/O-bound JSON + dashboard app (`gunicorn -c python:web.gunicorn_conf`).

gthread workers, as web/gunicorn_worker.py extends them: SSE streams and ?wait= long polls are
handed to an event loop and hold no thread, while requests (which mostly wait on Postgres)
share the threads. No preload: each worker builds its own connection pool after the fork. The
graceful timeout stays under the 30 s that Heroku and Render allow between SIGTERM and SIGKILL.
The environment variables (PORT, WEB_CONCURRENCY, GUNICORN_THREADS, GUNICORN_ACCESS_LOG) are
read in jobqueue/settings.py.
"""

from jobqueue import settings

bind = f"0.0.0.0:{settings.PORT.get()}"
worker_class = "web.gunicorn_worker.HandOffWorker"
workers = settings.WEB_CONCURRENCY.get()
threads = settings.GUNICORN_THREADS.get()
preload_app = False
timeout = settings.WEB_TIMEOUT_SECONDS
graceful_timeout = settings.WEB_GRACEFUL_TIMEOUT_SECONDS
keepalive = 5
accesslog = settings.GUNICORN_ACCESS_LOG.get()  # "-" for stdout
errorlog = "-"
