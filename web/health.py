"""/healthz (the process is up), /readyz (database reachable, migrations applied), /metrics.

With a read replica, /readyz also says whether reads use it and how far behind it is; a
replica that lags or is down does not make the app unready (reads then go to the primary).
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from jobqueue.db import migrate
from web.resources import resources

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    try:
        with resources().client.pool.connection(timeout=5) as conn:
            missing = [m.version for m in migrate.pending(conn)]
    except Exception as exc:  # any failure to reach the database means not ready
        return jsonify(status="unavailable", error=str(exc).strip()[:200]), 503
    if missing:
        return jsonify(status="migrations pending", pending=missing), 503
    res = resources()
    if res.replicated:
        used = res.reader is res.replica
        return jsonify(status="ready", read_replica={
            "used": used, "lag_seconds": round(res.freshness.lag_seconds, 3)})
    return jsonify(status="ready")


@bp.get("/metrics")
def metrics():
    from web.auth import Denied, bearer_token, check_token_hash
    from web.metrics import render

    if not current_app.config["METRICS_PUBLIC"]:
        from jobqueue.tokens import hash_token

        token = bearer_token()
        try:
            if token is None:
                raise Denied(401, "unauthorized", "metrics need a token (or "
                             "JOBQUEUE_METRICS_PUBLIC=1)")
            check_token_hash(hash_token(token))
        except Denied as denied:
            return Response(denied.message + "\n", status=denied.status, headers=denied.headers)
    res = resources()
    pools = {"primary": res.client} | ({"read": res.replica} if res.replicated else {})
    lag = res.freshness.lag_seconds if res.replicated else None
    body, content_type = render(res.reader, held=res.held_requests(), pools=pools,
                                replica_lag=lag)
    return Response(body, content_type=content_type)
