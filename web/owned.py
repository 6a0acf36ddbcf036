"""What the APIs of the named things an owner saves (web/schedules.py, web/campaigns.py)
share, so both answer the same way: whose a saved one is (a non-admin's is theirs; naming
another owner is 403), the 409 of a save the store refused (a name another owner holds, or that
POST finds taken), the
answer to a removal, and rows as JSON (times in ISO 8601).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from flask import g

from web.contract import BadRequest
from web.schemas import ResponseModel


class Removed(ResponseModel):
    name: str
    removed: Literal[True]


def with_owner(fields: dict) -> dict:
    """`fields` of a save with the owner it gets: the caller's, unless an admin names one."""
    if not g.principal.admin:
        if "owner" in fields and fields["owner"] != g.principal.owner:
            raise BadRequest("owner: only an admin token may name another owner", "owner", 403,
                             "forbidden")
        fields["owner"] = g.principal.owner
    return fields


def refused(what: str, name: str, existing: dict | None) -> BadRequest:
    """The 409 of a save the store refused (its upsert tests the owner itself, so a name
    another owner saved a moment ago is never taken over): the `what` named `name` is another
    owner's, which the caller may neither see nor replace; or a POST found it taken (PUT
    replaces)."""
    if existing is not None and not g.principal.can_see(existing["owner"]):
        return BadRequest(f"{what} {name}: exists", field="name", status=409, code="conflict")
    return BadRequest(f"{what} {name}: exists (PUT /api/{what}s/{name} replaces it)",
                      field="name", status=409, code="conflict")


def as_json(row: dict) -> dict:
    """A row with its times (datetime, date) as ISO 8601 text."""
    return {k: v.isoformat() if isinstance(v, datetime | date) else v for k, v in row.items()}
