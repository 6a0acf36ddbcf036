"""Uploaded documents: their text (within JOBQUEUE_DOCUMENT_MAX_CHARS), the chunks analyzed,
one assembled analysis, and their pruning after JOBQUEUE_DOCUMENT_RETENTION_SECONDS."""

from __future__ import annotations

import io
from collections import Counter

from jobqueue import settings
from jobqueue.db.queries import q
from jobqueue.errors import DocumentTooLarge as DocumentTooLarge
from jobqueue.errors import UnreadableDocument as UnreadableDocument
from jobqueue.worker.maintenance import register_prune_hook

CHUNK_CHARS = 12_000  # about 3,000 tokens: room for instructions and a full answer
# A PDF stream may inflate to this many bytes per allowed character of text, at most (content
# streams carry operators and positions besides the text), and never to less than 1 MB.
STREAM_BYTES_PER_CHAR = 4
MIN_STREAM_BYTES = 1 << 20


def extract_text(content_type: str, data: bytes, max_chars: int) -> str:
    """The document's text; DocumentTooLarge past `max_chars`. A PDF is read page by page
    and reading stops at the first page past the limit; each stream inflates to a bounded
    size (pypdf's Configuration), so a decompression bomb fails without being inflated."""
    if content_type == "application/pdf":
        text = _pdf_text(data, max_chars)
    else:
        text = data.decode("utf-8")
        if len(text) > max_chars:
            raise too_many_chars(len(text), max_chars)
    text = text.strip()
    if not text:
        raise UnreadableDocument("the document has no text (a scanned PDF needs OCR first)")
    return text


def too_many_chars(chars: int | None, max_chars: int) -> DocumentTooLarge:
    found = f"{chars} characters" if chars else "more characters"
    return DocumentTooLarge(f"{found} of text, over the limit of {max_chars} "
                            "(JOBQUEUE_DOCUMENT_MAX_CHARS)")


def _pdf_text(data: bytes, max_chars: int) -> str:
    from pypdf import PdfReader, apply_configuration, get_configuration
    from pypdf.errors import LimitReachedError, PdfReadError

    stream_bytes = max(STREAM_BYTES_PER_CHAR * max_chars, MIN_STREAM_BYTES)
    limits = {name: stream_bytes for name in (
        "zlib_maximum_output_length", "lzw_maximum_output_length",
        "run_length_maximum_output_length", "array_based_stream_maximum_output_length",
        "brotli_maximum_output_length", "stream_decoding_work_maximum_length")
        if hasattr(get_configuration(), name)}  # pypdf 6.18 has fewer than 7.1
    pages, chars = [], 0
    try:
        with apply_configuration(**limits):
            reader = PdfReader(io.BytesIO(data))
            for page in reader.pages:
                text = page.extract_text() or ""
                chars += len(text) + 2
                if chars > max_chars:
                    raise too_many_chars(None, max_chars)
                pages.append(text)
    except LimitReachedError as exc:
        raise DocumentTooLarge(
            f"a PDF stream inflates past {stream_bytes} bytes, {STREAM_BYTES_PER_CHAR} per "
            f"character of the limit of {max_chars} (JOBQUEUE_DOCUMENT_MAX_CHARS): {exc}") \
            from None
    except (PdfReadError, ValueError, KeyError) as exc:
        if isinstance(exc, UnreadableDocument):
            raise
        raise UnreadableDocument(f"not a readable PDF ({exc})") from None
    return "\n\n".join(pages)


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


async def prune_expired(conn) -> int:
    """The documents' maintenance hook: delete a slice of those past their retention
    (leader-gated in SQL)."""
    cur = await conn.execute(q("prune_documents"), {
        "retention_seconds": settings.JOBQUEUE_DOCUMENT_RETENTION_SECONDS.get(),
        "limit": 1000})
    return cur.rowcount


register_prune_hook("documents", prune_expired)
