"""A task module that imports once, then fails: `worker --processes` imports it in the
supervisor (which succeeds) and in every child (which fails at start, exit 2), the crash loop
the supervisor must give up on. CRASH_MARKER names the file that records the first import."""

import os
from pathlib import Path

_marker = Path(os.environ["CRASH_MARKER"])
if _marker.exists():
    raise ImportError("simulated crash at start")
_marker.touch()
