"""Which URLs and addresses webhooks may reach, and the signature: no database, no network
(only literal addresses and the resolver's answer for names the machine itself knows)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobqueue.errors import InvalidWebhook, WebhookRefused
from jobqueue.webhooks import addresses, signing
from jobqueue.webhooks.delivery import render_text


@pytest.fixture(autouse=True)
def defaults(monkeypatch):
    for name in ("JOBQUEUE_WEBHOOK_ALLOW_PRIVATE", "JOBQUEUE_WEBHOOK_ALLOWED_HOSTS"):
        monkeypatch.delenv(name, raising=False)


class TestUrls:
    @pytest.mark.parametrize("url", [
        "http://127.0.0.1/", "http://127.1.2.3:8080/x", "http://10.0.0.1/", "http://172.16.0.1/",
        "http://192.168.1.1/", "http://169.254.169.254/latest/meta-data", "http://[::1]/",
        "http://[fe80::1]/", "http://[fc00::1]/", "http://[::ffff:10.0.0.1]/", "http://0.0.0.0/",
        "http://100.64.0.1/", "http://224.0.0.1/", "http://255.255.255.255/"])
    def test_non_global_literals_are_refused(self, url):
        with pytest.raises(InvalidWebhook, match=r"^url: .* address"):
            addresses.check_url(url)

    @pytest.mark.parametrize("url", ["ftp://example.com/", "file:///etc/passwd",
                                     "http://user:pw@example.com/", "http:///x", "example.com",
                                     "http://exa mple.com/", "http://example.com:99999/",
                                     "http://example.com\r\nX: y/", "javascript:alert(1)"])
    def test_malformed_or_unsafe_urls_are_refused(self, url):
        with pytest.raises(InvalidWebhook, match=r"^url: "):
            addresses.check_url(url)

    def test_a_public_url_is_taken_apart_for_the_request(self):
        t = addresses.check_url("https://Hooks.Example.com/a/b?x=1#frag")
        assert (t.scheme, t.host, t.port, t.path, t.host_header) == (
            "https", "hooks.example.com", 443, "/a/b?x=1", "hooks.example.com")
        assert addresses.check_url("http://[2606:4700::1]:81/").host_header == \
            "[2606:4700::1]:81"

    def test_allowed_hosts_restrict_names(self, monkeypatch):
        monkeypatch.setenv("JOBQUEUE_WEBHOOK_ALLOWED_HOSTS", "hooks.slack.com,*.example.com")
        addresses.check_url("https://hooks.slack.com/services/x")
        addresses.check_url("https://a.example.com/")
        with pytest.raises(InvalidWebhook, match="ALLOWED_HOSTS"):
            addresses.check_url("https://evil.com/")

    def test_allowed_private_networks(self, monkeypatch):
        monkeypatch.setenv("JOBQUEUE_WEBHOOK_ALLOW_PRIVATE", "127.0.0.0/8")
        assert addresses.check_url("http://127.0.0.1:9/").port == 9
        with pytest.raises(InvalidWebhook):
            addresses.check_url("http://10.0.0.1/")

    def test_a_name_resolving_to_loopback_is_refused_at_subscription(self):
        with pytest.raises(InvalidWebhook, match="localhost resolves to"):
            addresses.check_reachable("http://localhost:9/")

    def test_every_address_of_a_name_is_checked(self):
        infos = [(0, 0, 0, "", ("93.184.216.34", 80)), (0, 0, 0, "", ("10.0.0.7", 80))]
        with pytest.raises(WebhookRefused, match=r"10\.0\.0\.7"):
            addresses._checked("mixed.example", infos)
        assert addresses._checked("ok.example", infos[:1]) == ["93.184.216.34"]

    @given(st.ip_addresses())
    def test_no_non_global_address_is_allowed_by_default(self, address):
        plain = address.ipv4_mapped if address.version == 6 and address.ipv4_mapped else address
        allowed = addresses.address_allowed(address)
        assert allowed == (plain.is_global and not plain.is_multicast)
        if allowed:
            assert not (plain.is_private or plain.is_loopback or plain.is_link_local)

    @given(st.text(max_size=80))
    def test_any_text_is_a_url_or_invalid_webhook(self, text):
        try:
            target = addresses.check_url(text)
        except InvalidWebhook as exc:
            assert str(exc).startswith("url: ")
        else:
            assert target.scheme in ("http", "https") and target.path.startswith("/")
            assert "\r" not in target.path and "\n" not in target.host_header
            literal = addresses._literal(target.host)
            assert literal is None or addresses.address_allowed(literal)


class TestSignature:
    def test_verify_accepts_the_header_and_refuses_tampering_and_old_times(self):
        body = b'{"id":"e1"}'
        value = signing.header("whsec_k", body, timestamp=1_000_000)
        assert value.startswith("t=1000000,v1=")
        assert signing.verify("whsec_k", value, body, now=1_000_100)
        assert not signing.verify("whsec_k", value, body + b" ", now=1_000_100)
        assert not signing.verify("whsec_other", value, body, now=1_000_100)
        assert not signing.verify("whsec_k", value, body, now=1_000_000 + 301)
        assert not signing.verify("whsec_k", "garbage", body)

    def test_secrets_are_long_and_distinct(self):
        a, b = signing.new_secret(), signing.new_secret()
        assert a != b and a.startswith("whsec_") and len(a) > 40


def test_alert_texts():
    firing = {"type": "alert.firing", "data": {"alert": {
        "queue": "emails", "metric": "latency", "threshold": 60.0, "value": 75.5}}}
    assert render_text(firing) == (":rotating_light: FIRING: queue emails: oldest waiting "
                                   "job 75.5s, over 60s")
    assert ipaddress.ip_address("8.8.8.8").is_global
