"""The dashboard (placeholder until its pages land): sign-in with an admin token."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("dashboard", __name__)


@bp.get("/")
def index():
    return "jobqueue dashboard", 200
