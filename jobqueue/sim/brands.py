"""Brand-list answers for the simulator: a prompt that asks for recommendations ("best",
"recommend", "top", "which", "alternatives", ...) is answered, when the simulator has a brand
pool, with a numbered list of 3-5 brands from the pool in an order seeded by the model and
the prompt (so every run, sample and test gets the same answer to the same question on the
same model, and two models rank differently), each with a short verdict and a cited URL. The
campaign tests and the demo get meaningful visibility numbers from it."""

from __future__ import annotations

import hashlib
import json
import random
import re

RECOMMENDATION = re.compile(r"\b(best|recommend\w*|top|which|alternatives?|compare|"
                            r"suggest\w*|options?|pick)\b", re.IGNORECASE)
VERDICTS = ("excellent and easy to use", "reliable, with good support",
            "popular but expensive", "powerful yet complicated to set up",
            "affordable and simple", "often slow and buggy according to reviews",
            "a trusted, leading choice", "limited, but fine for small teams")
SOURCES = ("pricing", "features", "reviews", "blog/comparison")


def slug(brand: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", brand.lower()) or "brand"


def answer(prompt: str, model: str, pool: list[str]) -> str | None:
    """The brand-list answer to `prompt` on `model`, or None when the prompt asks for no
    recommendation or the pool is empty."""
    if not pool or not RECOMMENDATION.search(prompt):
        return None
    rng = random.Random(hashlib.sha256(f"{model}\0{prompt}".encode()).digest())
    count = rng.randint(min(3, len(pool)), min(5, len(pool)))
    picks = rng.sample(list(pool), count)
    topic = " ".join(prompt.split()[:12])
    lines = [f"Here are {count} options worth a look ({topic}):"]
    for rank, brand in enumerate(picks, 1):
        if rng.random() < 0.7:
            url = f"https://www.{slug(brand)}.com/{rng.choice(SOURCES)}"
        else:
            url = f"https://www.g2.com/products/{slug(brand)}/reviews"
        lines.append(f"{rank}. {brand}: {rng.choice(VERDICTS)}. Source: {url}")
    lines.append("The right pick depends on your team's size and budget.")
    return "\n".join(lines)


EXTRACTION_SCHEMA = "brand_mentions"  # jobqueue/campaigns/extract.py's schema name
_URL = re.compile(r"https?://[^\s<>()\[\]{}\"'`|\\^]+")


def extraction(user: str) -> str | None:
    """An answer to the extract step's request ({"tracked_brands", "answer"} as the user
    message; the JSON schema `brand_mentions`): each brand mentioned or not, its rank in
    order of first mention, a sentiment of 0.5, and the URLs in the answer. None when the
    request is not one."""
    try:
        request = json.loads(user)
        brands, text = request["tracked_brands"], request["answer"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(text, str) or not isinstance(brands, list):
        return None
    cited = _URL.findall(text)
    plain = _URL.sub(" ", text).casefold()
    first = {}
    for b in brands:
        names = [b.get("name", ""), *(b.get("aliases") or [])]
        hits = [m.start() for n in names if n
                for m in re.finditer(rf"(?<!\w){re.escape(n.casefold())}(?!\w)", plain)]
        if hits:
            first[b.get("name")] = min(hits)
    ranks = {n: i + 1 for i, n in enumerate(sorted(first, key=first.__getitem__))}
    return json.dumps({"brands": [{"name": b.get("name"), "mentioned": b.get("name") in ranks,
                                   "position": ranks.get(b.get("name")),
                                   "sentiment": 0.5 if b.get("name") in ranks else None}
                                  for b in brands],
                       "citations": [u.rstrip(".,;:!?") for u in cited]})
