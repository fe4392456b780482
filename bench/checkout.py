"""A checkout named in the benchmarks' results by its commit, never by a path of this machine.

Only the standard library: ``bench/projector.py`` imports it before a pass puts another checkout's packages
first on the path."""

from __future__ import annotations

import subprocess
from pathlib import Path


def describe(checkout: str | Path | None) -> str | None:
    """``checkout``'s last commit as "<short hash> <subject>" (100 characters at most); None for None."""
    if checkout is None:
        return None
    out = subprocess.run(["git", "-C", str(checkout), "log", "-1", "--format=%h %s"], capture_output=True, text=True)
    return out.stdout.strip()[:100] or "another checkout"


def save(results: Path, root: Path, args, rounds: list, summary: dict) -> None:
    """A bench's rounds and summary in ``results`` (JSON), with the checkout and the arguments that made them."""
    import json

    results.write_text(json.dumps({"checkout": describe(root), "args": vars(args), "rounds": rounds,
                                   "summary": summary}, indent=2) + "\n")
    print(f"saved {results.relative_to(root)}")
