"""The pages: the landing page and the health check."""

from __future__ import annotations

from flask import Blueprint, Flask, jsonify, render_template
from flask.typing import ResponseReturnValue

bp = Blueprint("pages", __name__)


@bp.get("/")
def index() -> ResponseReturnValue:
    """The landing page."""
    return render_template("index.html")


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """Liveness: the web app answers."""
    return jsonify(status="ok")


def init_app(app: Flask) -> None:
    """Register the pages on ``app``."""
    app.register_blueprint(bp)
