"""``medic check --data PATH``: the check ``medic train`` does before it starts, alone, on every
case at once. Prints one row per case (shape, voxel spacing, channels, label values), a summary
line, then every problem; exit 0 when there is none, else 2. Takes ``medic train``'s options
(``--patch_size``, ``--spacing``, ``--num_classes``, ...), so it checks what that training would.

    medic check --data Task99_Toy
    medic check --data Task99_Toy --patch_size 64 64 64
"""

from __future__ import annotations

from medic.config import parse_args
from medic.errors import MedicError, Problems
from medic.store.files import shown_path


def main(argv: list[str] | None = None) -> int:
    argv = list(argv or [])
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip() + "\n\nOptions: those of medic train (medic train --help).")
        return 0
    cfg, _ = parse_args(argv, prog="medic check")
    if not cfg.data:
        raise MedicError("medic check needs --data PATH (an images/ + masks/ folder, or a Decathlon or "
                         "nnU-Net data set)")
    from medic.train.launch.roles import explicit_options
    from medic.train.launch.checks import check_data
    problems = Problems()
    found = check_data(cfg, explicit_options(argv), problems)
    rows = folder_rows(found) if isinstance(found, list) else layout_rows(found)
    print(table(rows, problems))
    print(summary(cfg, found, rows, problems))
    if problems:
        raise MedicError(problems.text(f"data folder {shown_path(cfg.data)}"))
    return 0


def _sizes(values, sep: str = " x ") -> str:
    return sep.join(f"{v:g}" if isinstance(v, float) else str(v) for v in values) if values else "-"


def _labels(values) -> str:
    if values is None:
        return "-"
    shown = " ".join(f"{v:g}" for v in values[:8])
    return shown + (f" (+{len(values) - 8})" if len(values) > 8 else "")


def folder_rows(found: list[dict]) -> list[dict]:
    """An images/ + masks/ folder: 2D pictures, one channel (colour becomes grey), no spacing."""
    return [{"case": r["case"], "shape": _sizes(r["shape"]), "spacing": "-", "channels": "1",
             "labels": _labels(r["values"])} for r in found]


def layout_rows(layout) -> list[dict]:
    return [{"case": case.name, "shape": _sizes(shape), "spacing": _sizes(zoom) if shape else "-",
             "channels": str(len(layout.modalities)), "labels": _labels(values)}
            for case, shape, zoom, values in zip(layout.cases, layout.shapes, layout.zooms, layout.values)]


def table(rows: list[dict], problems: Problems) -> str:
    """The cases, one line each; a case named in a problem is marked ``!``."""
    head = {"case": "case", "shape": "shape (RAS)", "spacing": "spacing (mm)", "channels": "channels",
            "labels": "label values"}
    for row in rows:
        row["mark"] = "!" if any(p.startswith(f"case {row['case']}:") or f"case {row['case']} " in p
                                 for p in problems) else ""
    widths = {k: max(len(head[k]), *(len(r[k]) for r in rows)) for k in head}
    lines = ["  " + "  ".join(head[k].ljust(widths[k]) for k in head)]
    lines += [f"{r['mark']:<2}" + "  ".join(r[k].ljust(widths[k]) for k in head) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def summary(cfg, found, rows: list[dict], problems: Problems) -> str:
    """``8 cases, 1 channel (MRI), labels 0..1 (background, tumour), 3D, patch 32 32 16: no problems``."""
    parts = [f"{len(rows)} case{'s' if len(rows) != 1 else ''}"]
    if not isinstance(found, list) and found is not None:
        n = len(found.modalities)
        parts += [f"{n} channel{'s' if n != 1 else ''} ({', '.join(found.modalities)})",
                  f"labels 0..{len(found.label_names) - 1} ({', '.join(found.label_names)})",
                  f"{cfg.spatial_dims}D"]
        if cfg.patch_size:
            parts.append(f"patch {cfg.patch_size}")
    verdict = "no problems" if not problems else f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
    return f"{', '.join(parts)}: {verdict}"
