"""The extract step's deterministic matcher (property tests: aliases, punctuation, case),
its URL and sentiment passes, the LLM answer's validation, and the campaign file's
FILE:LINE: field errors."""

from __future__ import annotations

import json
import re
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobqueue.campaigns import extract, model

BRANDS = [{"name": "Acme", "aliases": ["Acme CRM", "acme.io"]},
          {"name": "Globex", "aliases": []}, {"name": "C++ Tools", "aliases": []}]
WORDS = st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=8).filter(
    lambda w: w not in ("acme", "globex"))
PUNCT = st.sampled_from(list(" ,.;:!?()\"'-\n\t*"))


def recase(text: str, flips: list[bool]) -> str:
    return "".join(c.upper() if f else c.lower() for c, f in zip(text, flips + [False] * len(
        text), strict=False))


class TestMatcher:
    @given(name=st.sampled_from(["Acme", "Acme CRM", "acme.io", "Globex", "C++ Tools"]),
           before=PUNCT, after=PUNCT, flips=st.lists(st.booleans(), max_size=12),
           left=st.lists(WORDS, max_size=4), right=st.lists(WORDS, max_size=4))
    def test_a_name_or_alias_in_any_case_between_punctuation_is_found(
            self, name, before, after, flips, left, right):
        text = " ".join(left) + before + recase(name, flips) + after + " ".join(right)
        found = extract.Matcher(BRANDS).find(text)
        owner = "Acme" if name.lower().startswith("acme") else \
            "Globex" if name == "Globex" else "C++ Tools"
        assert [b for b, _, _ in found] == [owner]

    @given(prefix=WORDS, suffix=WORDS)
    def test_a_name_inside_a_longer_word_is_not_a_mention(self, prefix, suffix):
        text = f"{prefix}acme {prefix}globex globex{suffix} acme{suffix}"
        assert extract.Matcher(BRANDS).find(text) == []

    @given(gap=st.sampled_from([" ", "  ", "\n", " \t "]))
    def test_spaces_inside_a_name_match_any_whitespace(self, gap):
        found = extract.Matcher(BRANDS).find(f"I like acme{gap}crm a lot")
        assert [(b, s) for b, s, _ in found] == [("Acme", 7)]

    @given(order=st.permutations(["Acme", "Globex", "C++ Tools"]))
    def test_positions_follow_the_order_of_first_mention(self, order):
        text = ". ".join(f"{b} is fine" for b in order) + ". " + order[0] + " again."
        a = extract.analyse(text, BRANDS)
        ranks = {m.brand: m.position for m in a.mentions}
        assert ranks == {b: i + 1 for i, b in enumerate(order)}


class TestPasses:
    def test_urls_are_cited_once_with_their_domain_and_names_in_them_are_not_mentions(self):
        a = extract.analyse("See https://www.globex.com/crm, and (https://acme.io/x). "
                            "Also https://www.globex.com/crm again.", BRANDS)
        assert a.citations == [("https://www.globex.com/crm", "globex.com"),
                               ("https://acme.io/x", "acme.io")]
        assert not any(m.mentioned for m in a.mentions)

    @pytest.mark.parametrize("text, score", [
        ("great and reliable", 1.0), ("slow and buggy", -1.0), ("not good", -1.0),
        ("great but expensive", 0.0), ("a CRM", 0.0)])
    def test_sentiment_lexicon(self, text, score):
        assert extract.sentiment(text) == score


class TestLlmAnswer:
    def valid(self, **changes):
        data = {"brands": [{"name": "Acme", "mentioned": True, "position": 1,
                            "sentiment": 0.5},
                           {"name": "Globex", "mentioned": False, "position": None,
                            "sentiment": None}],
                "citations": ["https://g2.com/a"]} | changes
        return json.dumps(data)

    def test_a_valid_answer_is_taken(self):
        a = extract.from_llm(self.valid(), BRANDS)
        assert a.method == "llm" and a.citations == [("https://g2.com/a", "g2.com")]
        assert [(m.brand, m.mentioned, m.position) for m in a.mentions] == [
            ("Acme", True, 1), ("Globex", False, None), ("C++ Tools", False, None)]

    @pytest.mark.parametrize("content", [
        "Sure! {", "[]", json.dumps({"brands": []}),
        json.dumps({"brands": [{"name": "Hooli", "mentioned": True, "position": 1,
                                "sentiment": 0}], "citations": []}),
        json.dumps({"brands": [{"name": "Acme", "mentioned": True, "position": 2,
                                "sentiment": 0}], "citations": []}),
        json.dumps({"brands": [{"name": "Acme", "mentioned": True, "position": 1,
                                "sentiment": 3}], "citations": []}),
        json.dumps({"brands": [], "citations": [1]})])
    def test_an_invalid_answer_is_refused(self, content):
        with pytest.raises(ValueError):
            extract.from_llm(content, BRANDS)


class TestCampaignFile:
    def write(self, tmp_path, name, text):
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    def test_yaml_errors_name_file_line_and_field(self, tmp_path):
        path = self.write(tmp_path, "c.yaml", "name: crm\nplatforms: [sim]\nprompts:\n"
                          "  - best CRM?\nbrands:\n  - name: Acme\n    aliases: [1]\n")
        with pytest.raises(model.InvalidCampaign) as caught:
            model.load_file(path, platforms={"sim": object()})
        assert str(caught.value).startswith(f"{path}:7: brands[0].aliases[0]: ")

    def test_toml_errors_name_file_line_and_field(self, tmp_path):
        path = self.write(tmp_path, "c.toml", 'name = "crm"\nplatforms = ["sim"]\n'
                          'prompts = ["best CRM?"]\nsamples = 0\nbrands = ["Acme"]\n')
        with pytest.raises(model.InvalidCampaign) as caught:
            model.load_file(path, platforms={"sim": object()})
        assert str(caught.value).startswith(f"{path}:4: samples: ")

    @pytest.mark.parametrize("name, text, says", [
        ("c.yaml", "name: crm\nplatforms: [sim]\nprompts: [a]\n1: x\nzz: y\n",
         "1: unknown field"),  # keys of mixed types could not be sorted
        ("c.yaml", "name: crm\nplatforms: [sim]\nbrands: [Acme]\nprompts:\n  - prompt: a\n"
                   "    metadata:\n"
                   "      day: 2026-03-01\n", "prompts[0].metadata"),  # a date is not JSON
        ("c.yaml", "name: crm\nplatforms: [sim]\nbrands: [Acme]\nprompts:\n  - prompt: a\n"
                   "    metadata: &m\n"
                   "      x: *m\n", "prompts[0].metadata"),  # an anchor cycle
        ("c.yaml", "name: " + "[" * 3000 + "\n", "not valid YAML"),
        ("c.toml", "name = " + "[" * 3000 + "]" * 3000 + "\n", "not valid TOML"),
    ])
    def test_odd_files_are_one_error_naming_the_place(self, tmp_path, name, text, says):
        """Each of these raised something other than InvalidCampaign (TypeError, ValueError,
        RecursionError): a traceback from `jobqueue campaigns create`."""
        path = self.write(tmp_path, name, text)
        with pytest.raises(model.InvalidCampaign, match=re.escape(says)):
            model.load_file(path, platforms={"sim": object()})

    def test_syntax_errors_name_the_line(self, tmp_path):
        path = self.write(tmp_path, "c.yaml", "name: crm\nplatforms: [sim\n")
        with pytest.raises(model.InvalidCampaign, match=r"c\.yaml:\d+: not valid YAML"):
            model.load_file(path, platforms={"sim": object()})
        path = self.write(tmp_path, "c.toml", 'name = "crm"\nplatforms = [\n')
        with pytest.raises(model.InvalidCampaign, match=r"c\.toml:\d+: not valid TOML"):
            model.load_file(path, platforms={"sim": object()})
