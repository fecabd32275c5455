"""gunicorn settings for the chat: one gevent worker, the embedded default."""

import os

bind = os.environ.get("CHAT_HTTP_BIND", "127.0.0.1:8000")
worker_class = "gevent"
workers = 1
graceful_timeout = 10
accesslog = "-"
