"""The simulator's brand-list answers: seeded by model and prompt, drawn from the pool, only
for recommendation prompts; and its answer to the extract step's JSON-schema request."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from jobqueue.campaigns import extract
from jobqueue.sim import brands

POOL = ["Acme", "Globex", "Initech", "Umbrella", "Hooli"]


class TestBrandLists:
    @given(topic=st.text(alphabet="abcdefgh ", min_size=1, max_size=30))
    def test_the_same_prompt_and_model_give_the_same_list_from_the_pool(self, topic):
        prompt = f"Which {topic} is best?"
        first = brands.answer(prompt, "m1", POOL)
        assert first == brands.answer(prompt, "m1", POOL)
        listed = [ln.split(". ", 1)[1].split(":")[0] for ln in first.splitlines()[1:-1]]
        assert 3 <= len(listed) <= 5 and set(listed) <= set(POOL)
        assert len(set(listed)) == len(listed)

    def test_models_rank_differently_and_plain_prompts_get_no_list(self):
        prompts = [f"Which CRM is best for team {i}?" for i in range(20)]
        assert any(brands.answer(p, "m1", POOL) != brands.answer(p, "m2", POOL)
                   for p in prompts)
        assert brands.answer("Say hello.", "m1", POOL) is None
        assert brands.answer("Which CRM is best?", "m1", []) is None

    def test_the_extraction_answer_is_valid_for_the_extract_step(self):
        text = brands.answer("Which CRM is best?", "m1", POOL)
        tracked = [{"name": b, "aliases": []} for b in POOL]
        request = json.dumps({"tracked_brands": tracked, "answer": text})
        llm = extract.from_llm(brands.extraction(request), tracked)
        rules = extract.analyse(text, tracked)
        assert [(m.brand, m.position) for m in llm.mentions] == [
            (m.brand, m.position) for m in rules.mentions]
        assert llm.citations == rules.citations
        assert brands.extraction("not json") is None
