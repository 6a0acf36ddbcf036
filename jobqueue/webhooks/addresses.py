"""Where a webhook may go: the guard against making the server call internal services.

- A URL is http or https, names a host (no user:password@), and that host matches one of
  JOBQUEUE_WEBHOOK_ALLOWED_HOSTS (default `*`: any).
- Every address the host resolves to must be global: private (10/8, 172.16/12, 192.168/16,
  fc00::/7), loopback, link-local (169.254/16: cloud metadata), multicast, shared (100.64/10),
  reserved and unspecified addresses are refused, unless inside one of the networks
  JOBQUEUE_WEBHOOK_ALLOW_PRIVATE names. One refused address refuses the host (a name that
  resolves to a public and a private address is not sent to either).
- The request then connects to an address checked here, never to the name again, so a DNS
  answer that changes between the check and the connection (DNS rebinding) cannot redirect
  it. Redirects are never followed (delivery.py).
Both the API (at subscription time, for an early 4xx) and the delivery task (at every attempt)
apply these rules; settings are read at each call.
"""

from __future__ import annotations

import asyncio
import fnmatch
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from jobqueue import settings
from jobqueue.errors import InvalidWebhook, WebhookRefused

MAX_URL_LENGTH = 2048

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Target:
    """A checked webhook URL, taken apart for the request."""

    scheme: str
    host: str          # lower case, IDNA-encoded; an IPv6 literal without brackets
    port: int
    path: str          # path and query, at least "/"
    host_header: str   # what the Host header says


def check_url(url: str) -> Target:
    """The URL's parts, or InvalidWebhook naming what is wrong with it (`url: ...`)."""
    if not isinstance(url, str) or not url:
        raise InvalidWebhook("url: required, an http(s) URL")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidWebhook(f"url: longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise InvalidWebhook("url: must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidWebhook(f"url: not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise InvalidWebhook("url: only http:// and https:// URLs")
    if parts.username is not None or parts.password is not None:
        raise InvalidWebhook("url: must not carry a user name or password")
    raw_host = (parts.hostname or "").rstrip(".")
    if not raw_host:
        raise InvalidWebhook("url: names no host")
    try:
        host = raw_host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise InvalidWebhook(f"url: {raw_host!r} is not a valid host name") from None
    port = port or (443 if scheme == "https" else 80)
    if not 0 < port < 65536:
        raise InvalidWebhook("url: the port must be 1..65535")
    if not host_allowed(host):
        raise InvalidWebhook(f"url: host {host} is not among the hosts this server calls "
                             "(JOBQUEUE_WEBHOOK_ALLOWED_HOSTS)")
    literal = _literal(host)
    if literal is not None and not address_allowed(literal):
        raise InvalidWebhook(f"url: {host} is a {_kind(literal)} address, which webhooks may "
                             "not reach (JOBQUEUE_WEBHOOK_ALLOW_PRIVATE)")
    shown = f"[{host}]" if literal is not None and literal.version == 6 else host
    default = 443 if scheme == "https" else 80
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(scheme, host, port, path,
                  shown if port == default else f"{shown}:{port}")


def host_allowed(host: str) -> bool:
    patterns = settings.JOBQUEUE_WEBHOOK_ALLOWED_HOSTS.get()
    return any(p == "*" or fnmatch.fnmatchcase(host, p) for p in patterns)


def address_allowed(address: IPAddress) -> bool:
    """Global unicast, or inside a network the operator allows."""
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in network for network in settings.JOBQUEUE_WEBHOOK_ALLOW_PRIVATE.get()
           if network.version == address.version):
        return True
    return address.is_global and not address.is_multicast


def _kind(address: IPAddress) -> str:
    for attribute in ("loopback", "link_local", "multicast", "private", "unspecified",
                      "reserved"):
        if getattr(address, f"is_{attribute}"):
            return attribute.replace("_", "-")
    return "non-global"


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _checked(host: str, infos) -> list[str]:
    addresses = []
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if not address_allowed(address):
            raise WebhookRefused(f"{host} resolves to {address}, a {_kind(address)} address; "
                                 "webhooks may not reach it (JOBQUEUE_WEBHOOK_ALLOW_PRIVATE)")
        addresses.append(str(address))
    if not addresses:
        raise WebhookRefused(f"{host} resolves to no address")
    return list(dict.fromkeys(addresses))


async def resolve(target: Target) -> list[str]:
    """Every address of the target's host, each checked; WebhookRefused if any is refused.
    An unresolvable name is OSError (socket.gaierror): a failed attempt, retried."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        target.host, target.port, type=socket.SOCK_STREAM)
    return _checked(target.host, infos)


def check_reachable(url: str) -> Target:
    """For a new subscription: check_url, and if the host resolves now, its addresses (a
    name that does not resolve yet is accepted; each delivery checks again)."""
    target = check_url(url)
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except OSError:
        return target
    try:
        _checked(target.host, infos)
    except WebhookRefused as exc:
        raise InvalidWebhook(f"url: {exc}") from None
    return target
