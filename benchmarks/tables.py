"""The benchmarks' printed tables: one row per k, one cell per arm, each cell a mean ± std with,
where it is compared with a reference arm, the 95% interval of the pooled difference; and plain
fixed-width tables (`fixed_width`)."""

from __future__ import annotations

from typing import Callable, Collection, List, Optional, Sequence


def interval_text(vs: Optional[dict]) -> str:
    """`` [low, high]`` in points, marked ``*`` ahead beyond noise or ``!`` significantly worse."""
    if not vs:
        return ""
    mark = "*" if vs["ahead_beyond_noise"] else ("!" if not vs["not_significantly_worse"] else "")
    return f" [{100 * vs['low']:+.1f}, {100 * vs['high']:+.1f}]{mark}"


def print_table(title: str, by_k: dict, arms, ks, cell_text: Callable[[dict], str]) -> None:
    """``by_k[str(k)][arm]`` -> a markdown table under ``title``, each cell written by ``cell_text``."""
    print(f"\n{title}")
    print(f"| k | {' | '.join(arms)} |\n|---|{'---|' * len(arms)}")
    for k in ks:
        print(f"| {k} | " + " | ".join(cell_text(by_k[str(k)][arm]) for arm in arms) + " |")


def fixed_width(rows: Sequence[Sequence], right_aligned: Collection[int] = ()) -> List[str]:
    """``rows`` (the first is the header) as lines of columns two spaces apart, with a rule of
    dashes under the header; the columns numbered in ``right_aligned`` are right-aligned, the
    others left. Trailing spaces are cut."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]

    def line(row):
        return "  ".join(cell.rjust(w) if i in right_aligned else cell.ljust(w)
                         for i, (cell, w) in enumerate(zip(row, widths))).rstrip()

    return [line(cells[0]), "  ".join("-" * w for w in widths), *(line(row) for row in cells[1:])]
