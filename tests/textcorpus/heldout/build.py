"""Render the held-out corpus (heldout/src/*.yaml) with the main corpus's renderer, then check it.

    python3 tests/textcorpus/heldout/build.py          render, then check
    python3 tests/textcorpus/heldout/build.py --check  check only

Same format as the main corpus (../README.md); see README.md here for why this set exists.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("textcorpus_build", HERE.parent / "build.py")
assert _spec and _spec.loader
builder = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(builder)


def main() -> int:
    return int(builder.build_folder(HERE, 7, "heldout/build.py"))


if __name__ == "__main__":
    sys.exit(main())
