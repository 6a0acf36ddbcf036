"""Uploaded documents: their text, the chunks analyzed, and one assembled analysis."""

from __future__ import annotations

import io
from collections import Counter

from jobqueue.errors import UnreadableDocument as UnreadableDocument

CHUNK_CHARS = 12_000  # about 3,000 tokens: room for instructions and a full answer


def extract_text(content_type: str, data: bytes) -> str:
    if content_type == "application/pdf":
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError

        try:
            reader = PdfReader(io.BytesIO(data))
            text = "\n\n".join(page.extract_text() or "" for page in reader.pages)
        except (PdfReadError, ValueError, KeyError) as exc:
            raise UnreadableDocument(f"not a readable PDF ({exc})") from None
    else:
        text = data.decode("utf-8")
    text = text.strip()
    if not text:
        raise UnreadableDocument("the document has no text (a scanned PDF needs OCR first)")
    return text


def chunks(text: str, size: int = CHUNK_CHARS) -> list[str]:
    """Split at paragraph (else line, else word) boundaries into pieces of at most `size`."""
    out: list[str] = []
    while len(text) > size:
        cut = max(text.rfind("\n\n", 0, size), text.rfind("\n", 0, size), text.rfind(" ", 0, size))
        cut = cut if cut > size // 2 else size
        out.append(text[:cut].strip())
        text = text[cut:].strip()
    if text:
        out.append(text)
    return out


def merge(parts: list[dict]) -> dict:
    """One analysis from the analyses of a document's chunks."""
    if len(parts) == 1:
        return parts[0]
    sentiments = Counter(p["sentiment"] for p in parts)
    top = sentiments.most_common()
    sentiment = top[0][0] if len(top) == 1 or top[0][1] > top[1][1] else "neutral"

    def ranked(key: str) -> list[str]:
        counts = Counter(v for p in parts for v in dict.fromkeys(p[key]))
        return [v for v, _ in counts.most_common(20)]

    return {"summary": " ".join(p["summary"] for p in parts), "sentiment": sentiment,
            "topics": ranked("topics"), "entities": ranked("entities")}
