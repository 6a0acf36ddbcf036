"""The webhooks API under /api/webhooks: subscriptions (the signing secret answered once, at
creation), their deliveries, and redelivery. Owners see and change only their own; admins
everyone's, and only admins may subscribe to alert events.

Bodies and answers are pydantic (v2) models, declared with @operation (web/contract.py): the
same declaration checks the request and puts it in /api/openapi.json. A body that does not
fit is a 400 or 422 naming the field, never a 5xx.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from flask import Blueprint, g, jsonify
from pydantic import BaseModel, ConfigDict, Field

from jobqueue.errors import InvalidWebhook
from jobqueue.webhooks import EVENT_TYPES, subscriptions
from web.auth import require
from web.contract import BadRequest, Reply, operation
from web.resources import resources
from web.schemas import ResponseModel

bp = Blueprint("webhooks", __name__)

EventType = Literal[EVENT_TYPES]  # type: ignore[valid-type]
DeliveryState = Literal["pending", "retrying", "succeeded", "dead"]


class WebhookCreate(BaseModel):
    """POST /api/webhooks: what to send where."""

    model_config = ConfigDict(extra="forbid", strict=True)
    url: str = Field(min_length=1, max_length=2048,
                     description="http(s) URL of the receiver; private addresses are refused")
    events: list[EventType] = Field(min_length=1, max_length=len(EVENT_TYPES))
    format: Literal["json", "slack"] = Field(
        "json", description='json: the signed event; slack: {"text": ...}')
    max_attempts: int = Field(subscriptions.DEFAULT_MAX_ATTEMPTS, ge=1, le=50)
    description: str | None = Field(None, max_length=subscriptions.MAX_DESCRIPTION)


class Webhook(BaseModel):
    id: int
    owner: str
    url: str
    events: list[EventType]
    format: Literal["json", "slack"]
    max_attempts: int
    description: str | None
    created_at: datetime


class WebhookCreated(Webhook):
    secret: str = Field(description="The signing key (whsec_...): shown in this answer only")


class Delivery(BaseModel):
    id: int
    subscription_id: int
    url: str
    event_id: str
    event_type: EventType
    state: DeliveryState
    attempts: int
    response_code: int | None
    last_error: str | None
    job_id: int
    created_at: datetime
    updated_at: datetime


class DeliveryQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    state: DeliveryState | None = None
    limit: int = Field(50, ge=1, le=1000)


class WebhookList(ResponseModel):
    webhooks: list[Webhook]


class DeliveryList(ResponseModel):
    deliveries: list[Delivery]


class WebhookDeleted(ResponseModel):
    id: int
    deleted: Literal[True]


class Redelivered(ResponseModel):
    id: int
    state: Literal["pending"]


NOT_FOUND = {404: "Not found (or not yours)"}

MODELS = {"WebhookCreate": WebhookCreate, "Webhook": Webhook, "WebhookCreated": WebhookCreated,
          "Delivery": Delivery, "DeliveryQuery": DeliveryQuery}


def _out(model: type[BaseModel], row: dict) -> dict:
    return model.model_validate(row).model_dump(mode="json")


@bp.post("/webhooks")
@require("write")
@operation("Subscribe a URL to events (the signing secret is in this answer only)",
           body=WebhookCreate, replies={201: Reply(WebhookCreated, "Created")},
           errors={422: "A URL refused (scheme, private address) or an event for admins"})
def create_webhook(body: WebhookCreate):
    principal = g.principal
    with resources().client.pool.connection() as conn:
        try:
            row = subscriptions.create(conn, principal.owner, body.url, body.events,
                                       format=body.format, max_attempts=body.max_attempts,
                                       description=body.description, admin=principal.admin)
        except InvalidWebhook as exc:
            field = str(exc).split(":", 1)[0]
            raise BadRequest(str(exc), field=field, status=422, code="invalid_webhook") from None
    response = jsonify(_out(WebhookCreated, row))
    response.status_code = 201
    response.headers["Location"] = f"/api/webhooks/{row['id']}"
    return response


@bp.get("/webhooks")
@require("read")
@operation("Webhooks of the caller's owner (admin: all)",
           replies={200: Reply(WebhookList, "{webhooks}")})
def list_webhooks():
    with resources().client.pool.connection() as conn:
        rows = subscriptions.list_subscriptions(conn, g.principal.owner_filter())
    return jsonify(webhooks=[_out(Webhook, r) for r in rows])


def _visible(subscription_id: int) -> dict:
    with resources().client.pool.connection() as conn:
        row = subscriptions.get(conn, subscription_id, g.principal.owner_filter())
    if row is None:
        raise BadRequest(f"webhook {subscription_id}: not found", status=404, code="not_found")
    return row


@bp.get("/webhooks/<int:subscription_id>")
@require("read")
@operation("A webhook", replies={200: Reply(Webhook, "The webhook")}, errors=NOT_FOUND)
def get_webhook(subscription_id: int):
    return jsonify(_out(Webhook, _visible(subscription_id)))


@bp.delete("/webhooks/<int:subscription_id>")
@require("write")
@operation("Remove a webhook", replies={200: Reply(WebhookDeleted, "{id, deleted}")},
           errors=NOT_FOUND)
def delete_webhook(subscription_id: int):
    with resources().client.pool.connection() as conn:
        if not subscriptions.remove(conn, subscription_id, g.principal.owner_filter()):
            raise BadRequest(f"webhook {subscription_id}: not found", status=404,
                             code="not_found")
    return jsonify(id=subscription_id, deleted=True)


def _deliveries(subscription_id: int | None, query: DeliveryQuery):
    with resources().client.pool.connection() as conn:
        rows = subscriptions.deliveries(conn, g.principal.owner_filter(), subscription_id,
                                        query.state, query.limit)
    return jsonify(deliveries=[_out(Delivery, r) for r in rows])


@bp.get("/webhooks/deliveries")
@require("read")
@operation("The newest deliveries the caller may see", query=DeliveryQuery,
           replies={200: Reply(DeliveryList, "{deliveries}")})
def list_deliveries(query: DeliveryQuery):
    """The newest deliveries of every webhook the caller may see (?state=&limit=)."""
    return _deliveries(None, query)


@bp.get("/webhooks/<int:subscription_id>/deliveries")
@require("read")
@operation("A webhook's newest deliveries", query=DeliveryQuery,
           replies={200: Reply(DeliveryList, "{deliveries}")}, errors=NOT_FOUND)
def webhook_deliveries(subscription_id: int, query: DeliveryQuery):
    _visible(subscription_id)
    return _deliveries(subscription_id, query)


@bp.post("/webhooks/deliveries/<int:delivery_id>/redeliver")
@require("write")
@operation("Send a delivery again (same body and event id)",
           replies={202: Reply(Redelivered, "{id, state}")},
           errors=NOT_FOUND | {409: "Its job is still queued or running"})
def redeliver(delivery_id: int):
    """Send a delivery again: the same body and event id, a fresh attempt budget."""
    with resources().client.pool.connection() as conn:
        outcome = subscriptions.redeliver(conn, delivery_id, g.principal.owner_filter())
    if outcome == "not_found":
        raise BadRequest(f"delivery {delivery_id}: not found", status=404, code="not_found")
    if outcome == "busy":
        raise BadRequest(f"delivery {delivery_id}: its job is still queued or running",
                         status=409, code="conflict")
    response = jsonify(id=delivery_id, state="pending")
    response.status_code = 202
    return response
