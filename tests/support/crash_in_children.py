"""A task module that imports once, then fails: `worker --processes` imports it in the
supervisor (which succeeds) and in every child, which fails at start: a crash (exit 1), the
loop the supervisor must give up on; or, with CRASH_AS_USAGE=1, an import error (exit 2, bad
usage), which it must not retry at all. CRASH_MARKER names the file that records the first
import."""

import os
from pathlib import Path

_marker = Path(os.environ["CRASH_MARKER"])
if _marker.exists():
    if os.environ.get("CRASH_AS_USAGE"):
        raise ImportError("simulated crash at start")
    raise RuntimeError("simulated crash at start")
_marker.touch()
