"""The prediction strip a run writes at each validation (``results/<id>/strip/epoch_N.png``):
the newest one, for the live monitor."""

from __future__ import annotations

import re
from pathlib import Path

from medic.store.columns import PER_CLASS, split_per_class

STRIP_RE = re.compile(r"^epoch_(\d+)\.png$")


def newest_strip(results_dir: Path) -> tuple[int, Path] | None:
    """The epoch and file of the newest strip, or None before the first validation."""
    folder = results_dir / "strip"
    try:
        found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := STRIP_RE.match(p.name))]
    except OSError:
        return None
    return max(found) if found else None


def per_class_text(latest: dict, names: list[str]) -> str:
    """``Val_Dice per class: liver 0.912 · tumour 0.541`` (one line per family)."""
    _, groups = split_per_class([n for n in names if n in latest])
    lines = []
    for prefix, columns in groups.items():
        values = " · ".join(f"{c[len(prefix):]} {latest[c]:.3f}" if isinstance(latest[c], float) else
                            f"{c[len(prefix):]} {latest[c]}" for c in columns)
        lines.append(f"{PER_CLASS[prefix]}: {values}")
    return "\n".join(lines)
