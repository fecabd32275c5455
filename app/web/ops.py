"""For the people who run the chat: ``/metrics`` (Prometheus) and ``/readyz``.

``/healthz`` (in pages) says the process answers; ``/readyz`` says it can do
its job: the WebSocket server accepts, the history store answers, and Redis
does when configured. A load balancer sends clients only to ready instances.
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response, current_app, jsonify
from flask.typing import ResponseReturnValue
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

from app.chat.service import ChatService

__all__ = ["init_app"]

bp = Blueprint("ops", __name__)


def chat() -> ChatService:
    return current_app.extensions["chat"]


@bp.get("/metrics")
def metrics() -> ResponseReturnValue:
    """Every metric of app/metrics.py in the text format; summed over gunicorn's workers."""
    directory = current_app.config["CHAT_SETTINGS"].metrics_dir
    if directory:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
    else:
        registry = REGISTRY
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    """200 when every part answers, else 503; the body says which part does not."""
    checks = chat().readiness()
    ready = all(check == "ok" for check in checks.values())
    return jsonify(status="ready" if ready else "unavailable", checks=checks), 200 if ready else 503


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
