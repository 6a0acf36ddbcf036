"""The dashboard's Webhooks page: every subscription, the newest deliveries (state,
attempts, last response code and error) filterable by state, and a Redeliver button (a
POST with the session's CSRF token, like every dashboard action).

Its routes join the dashboard's blueprint (`attach`), so they share its sign-in (an admin
session), CSRF check, templates and live refresh.
"""

from __future__ import annotations

from flask import Blueprint, flash, redirect, request, url_for

from jobqueue.webhooks import subscriptions
from web.dashboard_support import attach_once, change, read, render

DELIVERIES_PAGE = 100


@attach_once
def attach(bp: Blueprint) -> None:
    """Add the page and its action to the dashboard blueprint (once, before it is
    registered)."""
    bp.add_url_rule("/webhooks", "webhooks", webhooks_page, methods=["GET"])
    bp.add_url_rule("/webhooks/deliveries/<int:delivery_id>/redeliver", "webhook_redeliver",
                    webhook_redeliver, methods=["POST"])


def webhooks_page():
    state = request.args.get("state") or None
    if state not in (None, *subscriptions.DELIVERY_STATES):
        state = None
    subs = read(subscriptions.list_subscriptions, None)
    rows = read(subscriptions.deliveries, None, None, state, DELIVERIES_PAGE)
    return render("webhooks.html", title="Webhooks", subscriptions=subs, rows=rows,
                  state=state, states=subscriptions.DELIVERY_STATES)


def webhook_redeliver(delivery_id: int):
    # A change: on the primary (`read` reads, on a replica when there is one).
    outcome = change(subscriptions.redeliver, delivery_id, None)
    messages = {"queued": (f"Delivery {delivery_id} queued again.", "message"),
                "busy": (f"Delivery {delivery_id} is still queued or running.", "error"),
                "not_found": (f"Delivery {delivery_id} does not exist.", "error")}
    flash(*messages[outcome])
    return redirect(url_for(".webhooks", state=request.form.get("state") or None))
