"""Text extraction within limits: a decompression bomb fails without being inflated, a PDF is
read page by page and reading stops past the character limit, a text over it is refused."""

from __future__ import annotations

import tracemalloc

import pytest

from jobqueue.llm import documents
from tests.support.helpers import minimal_pdf


def test_a_decompression_bomb_fails_without_being_inflated():
    bomb = minimal_pdf("Boom", padding=200 << 20)  # 200 MB of spaces in about 200 kB
    tracemalloc.start()
    try:
        with pytest.raises(documents.DocumentTooLarge, match="JOBQUEUE_DOCUMENT_MAX_CHARS"):
            documents.extract_text("application/pdf", bomb, max_chars=1000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20  # a stream inflates to 1 MB at most (the floor); pypdf alone: 75 MB


def test_pdf_text_past_the_limit_is_too_large_and_within_it_is_read():
    pdf = minimal_pdf("Globex " * 200)
    assert documents.extract_text("application/pdf", pdf, 2000).startswith("Globex")
    with pytest.raises(documents.DocumentTooLarge, match="over the limit of 1000"):
        documents.extract_text("application/pdf", pdf, 1000)


def test_too_large_is_unreadable_so_the_job_is_dead_at_once():
    with pytest.raises(documents.UnreadableDocument, match="1001 characters"):
        documents.extract_text("text/plain", b"x" * 1001, 1000)


def test_pages_past_the_limit_are_not_read(monkeypatch):
    import io

    from pypdf import PageObject, PdfWriter

    writer = PdfWriter()
    for _ in range(5):
        writer.add_blank_page(100, 100)
    out = io.BytesIO()
    writer.write(out)
    read = []
    monkeypatch.setattr(PageObject, "extract_text",
                        lambda self, *a, **k: read.append(1) or "y" * 600)
    with pytest.raises(documents.DocumentTooLarge):
        documents.extract_text("application/pdf", out.getvalue(), 1000)
    assert len(read) == 2  # the second page passed 1000 characters: pages 3 to 5 unread
