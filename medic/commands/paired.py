"""``medic compare A B --paired``: model B against model A on the same cases (``medic.analysis.paired``).

    medic compare 20251106_103015 20251107_091500 --paired --metric dice --epoch last --format markdown

Prints the table (``--format table|csv|markdown|latex``, rounded as papers print it) and how it
was computed (seed, resamples, scipy's version and method); writes the unrounded table to
``analysis/paired_<A>_vs_<B>_<metric>_<epoch>.csv`` (and the printed table with how it was
computed in ``.txt``). With ``csv``, ``markdown`` or ``latex`` only
the table goes to stdout (ready to redirect into a file), the rest to stderr.
"""

from __future__ import annotations

import sys

from medic.errors import MedicError


def provenance(table) -> list[str]:
    """The lines that say how a paired table was computed."""
    a = table.attrs
    methods = sorted({m for m in a["methods"].values() if m})
    lines = [f"Paired comparison of {a['metric']} ({a['epoch']} epoch): A = {a['a']}, B = {a['b']}; "
             f"diff = mean of B - A ({a['direction']} is better)",
             f"95% CI: percentile bootstrap, {a['resamples']:,} resamples, numpy.random.default_rng(seed={a['seed']})",
             f"p: Wilcoxon signed-rank on round(B - A, 9), zero_method='wilcox', correction=False "
             f"(scipy {a['scipy']}, method: {', '.join(methods) or '-'}); p_holm: Holm over the classes, "
             f"the mean row left out"]
    return lines + [f"note: {n}" for n in a["notes"]]


def run_paired(args, project) -> int:
    from medic.analysis.paired import compare_paired
    from medic.analysis.papers import format_table
    from medic.store.files import shown_path, write_text_atomic
    if len(args.runs) != 2:
        raise MedicError(f"--paired compares exactly two runs, cross-validations or evaluations; got {len(args.runs)}")
    table = compare_paired(args.runs[0], args.runs[1], root=project.root, metric=args.metric,
                           epoch=args.epoch, seed=args.seed)
    text = format_table(table, args.format)
    names = [str(table.attrs[k]).replace("/", "_") for k in ("a", "b")]
    path = project.analysis / f"paired_{names[0]}_vs_{names[1]}_{args.metric}_{args.epoch}.csv"
    project.analysis.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, table.to_csv(index=False))
    write_text_atomic(path.with_suffix(".txt"), "\n".join(provenance(table)) + "\n\n" + format_table(table, "table"))
    info = "\n".join(provenance(table) + [f"written: {shown_path(path)} (and .txt)"])
    if args.format == "table":
        print(f"{info}\n\n{text}", end="")
    else:
        print(text, end="")
        print(info, file=sys.stderr)
    return 0
