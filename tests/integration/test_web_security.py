"""The web app's defences over real HTTP on loopback: sign-in redirects stay on this site,
dashboard sessions are server-side records, CSV exports cannot run formulas, security headers
and cookie flags, body limits without Content-Length, and failed-authentication floods."""

from __future__ import annotations

import csv
import html
import io
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.web import Api, Dashboard, Server


@pytest.fixture
def config_file(sim, tmp_path):
    path = tmp_path / "jobqueue.toml"
    path.write_text(f'[platforms.sim]\nbase_url = "{sim.base_url}"\nmodel = "sim-main"\n'
                    'api_key_env = "SIM_KEY_A"\nmax_tokens = 200\ntimeout = 5\n')
    return str(path)


@pytest.fixture
def server(db_url, config_file):
    s = Server(db_url, JOBQUEUE_CONFIG=config_file)
    yield s
    s.close()


@pytest.fixture
def admin_token(make_token) -> str:
    return make_token("ops", ["admin"])


# -- redirects after sign-in ----------------------------------------------------------------

# What browsers do to a Location before resolving it (WHATWG URL parser): strip leading and
# trailing C0 controls and spaces, drop tab, CR and LF anywhere, read "\" as "/" in http(s).
_C0_AND_SPACE = "".join(chr(c) for c in range(0x21))


def browser_reading(location: str) -> str:
    return re.sub(r"[\t\r\n]", "", location.strip(_C0_AND_SPACE)).replace("\\", "/")


def same_origin_path(location: str) -> bool:
    """A Location a browser resolves to a path on the same origin (no scheme, no host)."""
    seen = browser_reading(location)
    return seen.startswith("/") and not seen.startswith("//")


HOSTILE = ["/\t/evil.example", "/%09/evil.example", "//evil.example/", "/\\evil.example",
           "\\\\evil.example", "\\/evil.example", "/\r\n/evil.example", "https://evil.example",
           "javascript:alert(1)", " //evil.example", "\t//evil.example", "/\x00/evil.example",
           "/\r\nSet-Cookie: stolen=1", "http:/evil.example", "/\x0b/evil.example",
           "/jobs\n\rLocation: https://evil.example"]


class TestSignInRedirect:
    @pytest.mark.parametrize("target", HOSTILE)
    def test_hostile_next_ends_on_this_site(self, server, make_token, target):
        """Whatever `next` says, the browser lands on a path of this site, never a 500."""
        r = Dashboard(server.base).sign_in(make_token("ops", ["admin"]), next_url=target)
        assert r.status_code == 302, (target, r.status_code)
        assert same_origin_path(r.headers["Location"]), (target, r.headers["Location"])
        assert "stolen" not in r.headers.get("Set-Cookie", "")

    def test_the_login_link_with_a_tab_in_next(self, server, make_token):
        """The reported case: /login?next=/%09/evil.example went to //evil.example."""
        d = Dashboard(server.base)
        page = d.get("/login?next=/%09/evil.example").text
        sent = html.unescape(re.search(r'name="next" value="([^"]*)"', page).group(1))
        assert sent == "/\t/evil.example"
        r = d.post("/login", {"token": make_token("ops", ["admin"]), "next": sent},
                   allow_redirects=False)
        assert r.status_code == 302 and r.headers["Location"] == "/"

    def test_a_path_on_this_site_is_kept(self, server, make_token):
        r = Dashboard(server.base).sign_in(make_token("ops", ["admin"]),
                                           next_url="/jobs?state=dead&q=a%20b")
        assert r.headers["Location"] == "/jobs?state=dead&q=a%20b"

    @settings(max_examples=150, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(target=st.one_of(
        st.text(max_size=30),
        st.lists(st.sampled_from(["/", "/", "\\", "\t", "\r", "\n", "\x00", " ", "%09",
                                  "evil.example", "http:", "javascript:", "@", ".", ":", "?",
                                  "#", "\x0c", "\u3000", "é"]),
                 min_size=1, max_size=6).map("".join)))
    def test_property_every_next_lands_on_this_site(self, server, admin_token, target):
        """Hypothesis: for any `next`, the sign-in answers 302 to a same-origin path."""
        r = Dashboard(server.base).sign_in(admin_token, next_url=target)
        assert r.status_code == 302, (target, r.status_code)
        assert same_origin_path(r.headers["Location"]), (target, r.headers["Location"])


# -- CSV exports ----------------------------------------------------------------------------

FORMULAS = ["=HYPERLINK(\"https://evil.example\",\"x\")", "+1+1", "-2+3", "@SUM(A1)",
            "\t=1+1", "\r=1+1"]


def formula_batch(api: Api) -> int:
    items = [{"prompt": text, "metadata": {"note": text, text: "key"}} for text in FORMULAS]
    items.append({"prompt": "plain", "metadata": {"note": "fine", "n": -3}})
    r = api.post("/api/batches", json={"platform": "sim", "items": items})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def assert_no_formula_cells(text: str) -> None:
    """Every cell a spreadsheet would evaluate is a quoted text starting with a single quote;
    the others are left as they were."""
    rows = list(csv.reader(io.StringIO(text, newline="")))
    cells = [cell for row in rows for cell in row]
    risky = [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert risky == ["-3"], cells  # the number
    for formula in FORMULAS:
        assert "'" + formula in cells
        quoted = '"\'' + formula.replace('"', '""')
        assert quoted in text, (quoted, text)
    assert "plain" in cells and "fine" in cells and "-3" in cells  # a number stays a number


class TestCsvExport:
    def test_api_download_neutralises_formulas(self, server, make_token):
        api = Api(server.base, make_token("alice"))
        batch_id = formula_batch(api)
        r = api.get(f"/api/batches/{batch_id}/results?format=csv")
        assert r.status_code == 200
        assert_no_formula_cells(r.text)

    def test_dashboard_download_neutralises_formulas(self, server, make_token):
        batch_id = formula_batch(Api(server.base, make_token("alice")))
        d = Dashboard(server.base)
        d.sign_in(make_token("ops", ["admin"]))
        r = d.get(f"/batches/{batch_id}/results.csv")
        assert r.status_code == 200
        assert_no_formula_cells(r.text)
