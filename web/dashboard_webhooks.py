"""The dashboard's Webhooks page: every subscription, the newest deliveries (state,
attempts, last response code and error) filterable by state, and a Redeliver button (a
POST with the session's CSRF token, like every dashboard action).

Its routes join the dashboard's blueprint (`attach`), so they share its sign-in (an admin
session), CSRF check, templates and live refresh.
"""

from __future__ import annotations

from flask import Blueprint, flash, redirect, request, url_for

from jobqueue.webhooks import subscriptions

DELIVERIES_PAGE = 100


def attach(bp: Blueprint) -> None:
    """Add the page and its action to the dashboard blueprint (once, before it is
    registered)."""
    if getattr(bp, "_webhooks_attached", False):
        return
    bp._webhooks_attached = True
    bp.add_url_rule("/webhooks", "webhooks", webhooks_page, methods=["GET"])
    bp.add_url_rule("/webhooks/deliveries/<int:delivery_id>/redeliver", "webhook_redeliver",
                    webhook_redeliver, methods=["POST"])


def webhooks_page():
    from web.dashboard import _page, _store

    state = request.args.get("state") or None
    if state not in (None, *subscriptions.DELIVERY_STATES):
        state = None
    subs = _store(subscriptions.list_subscriptions, None)
    rows = _store(subscriptions.deliveries, None, None, state, DELIVERIES_PAGE)
    return _page("webhooks.html", title="Webhooks", subscriptions=subs, rows=rows,
                 state=state, states=subscriptions.DELIVERY_STATES)


def webhook_redeliver(delivery_id: int):
    from web.dashboard import _change

    # A change: on the primary (_store reads, on a replica when there is one).
    outcome = _change(subscriptions.redeliver, delivery_id, None)
    messages = {"queued": (f"Delivery {delivery_id} queued again.", "message"),
                "busy": (f"Delivery {delivery_id} is still queued or running.", "error"),
                "not_found": (f"Delivery {delivery_id} does not exist.", "error")}
    flash(*messages[outcome])
    return redirect(url_for(".webhooks", state=request.form.get("state") or None))
