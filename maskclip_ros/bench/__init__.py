"""Benchmarks as library code (the `maskclip-ros bench*` commands are faces over these): ``model`` (the
MaskCLIP modes), ``proposals`` (proposal backends), ``suite`` (everything in one run). They print ratios
measured side by side in one run (these machines are noisy) and write JSON."""
from __future__ import annotations

import json
from pathlib import Path


def write_json(path: Path, data: dict) -> None:
    """Write benchmark results as indented JSON (creating the directory) and say where."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {path}")
