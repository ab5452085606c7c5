"""The report, REPORT.md, assembled from the notebooks; README.md's timing table from the benchmark's file.

    python -m hw1utils.report           # rewrite REPORT.md and the generated table of README.md
    python -m hw1utils.report --check   # exit 1, one line per problem on stderr, if anything is stale

Each claim is written once. The sentences a reader sees are the notebooks' markdown cells tagged `report`
("What we see", "Comments"). REPORT.md copies them, with each notebook's report questions, its figures and
its settings (from results.json), so nothing in it is typed by hand. Every claim of a notebook's check
cell (a key of the dict given to `checks.confirm`) must be a verbatim fragment of those cells (emphasis
marks, code marks and line breaks aside): a sentence changed in one place and not the other fails --check,
and so does a REPORT.md or a README timing table that no longer matches its sources.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from pathlib import Path

import nbformat

from .config import FIGURES_DIR, REPO_ROOT

README = REPO_ROOT / "README.md"
REPORT = REPO_ROOT / "REPORT.md"
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
TIMINGS = REPO_ROOT / "benchmarks" / "suite.json"  # written by benchmarks/bench_suite.py --save
GROUPS = {"1-1": "Deep vs shallow", "1-2": "Optimization", "1-3": "Generalization"}
TIMING_BLOCK = re.compile(r"(?P<head><!-- BEGIN timing -->\n)(?P<body>.*?)(?P<tail><!-- END timing -->)", re.S)
FIGURE = re.compile(r"!\[[^\]\n]*\]\((?P<path>[^)\s]+)")
REPORT_TAG = "report"


# ---- the notebooks' parts ------------------------------------------------------------------------

def report_cells(nb: nbformat.NotebookNode) -> list[str]:
    """The markdown of the cells tagged `report`, in notebook order."""
    return [cell.source for cell in nb.cells
            if cell.cell_type == "markdown" and REPORT_TAG in cell.metadata.get("tags", [])]


def _code_trees(nb: nbformat.NotebookNode) -> list[ast.Module]:
    """The parsed code cells (IPython magics dropped)."""
    return [ast.parse("\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith("%")))
            for cell in nb.cells if cell.cell_type == "code"]


def _string_keys(node: ast.Dict) -> list[str]:
    """The string-constant keys of a dict display."""
    return [key.value for key in node.keys if isinstance(key, ast.Constant) and isinstance(key.value, str)]


def claim_keys(nb: nbformat.NotebookNode) -> list[str]:
    """The sentences of the claims given to checks.confirm: its dict's string keys, and those of every dict
    assigned to a name the call spreads into it (`**claims`)."""
    trees, keys, spread = _code_trees(nb), [], set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "confirm" and node.args:
                for claims in (n for n in ast.walk(node.args[0]) if isinstance(n, ast.Dict)):
                    keys += _string_keys(claims)
                    spread |= {value.id for key, value in zip(claims.keys, claims.values)
                               if key is None and isinstance(value, ast.Name)}
    for tree in trees:
        for node in ast.walk(tree):
            if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
                    and any(isinstance(t, ast.Name) and t.id in spread for t in node.targets)):
                keys += _string_keys(node.value)
    return keys


def plain(markdown: str) -> str:
    """Markdown as the words a reader sees: emphasis and code marks dropped, whitespace collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"[*`]", "", markdown)).strip()


def unwritten_claims(nb: nbformat.NotebookNode) -> list[str]:
    """The claims of the check cell that are not a verbatim fragment of the notebook's report cells."""
    text = plain("\n".join(report_cells(nb)))
    return [key for key in claim_keys(nb) if plain(key) not in text]


def title(nb: nbformat.NotebookNode) -> str:
    """The notebook's title: its first markdown heading, without the '#'."""
    first = next(cell.source for cell in nb.cells if cell.cell_type == "markdown")
    return first.splitlines()[0].lstrip("# ").strip()


def questions(nb: nbformat.NotebookNode) -> str:
    """The opening's paragraph that quotes the report questions ("" when there is none)."""
    first = next(cell.source for cell in nb.cells if cell.cell_type == "markdown")
    return next((p.strip() for p in first.split("\n\n") if p.lstrip().startswith("**Report questions")), "")


def compact(value, top: bool = True) -> str:
    """A settings value as one table cell: lists joined with ", ", floats with :g, dicts as key: value."""
    if isinstance(value, (list, tuple)):
        inner = ", ".join(compact(v, False) for v in value)
        return inner if top else f"[{inner}]"
    if isinstance(value, dict):
        inner = ", ".join(f"{k}: {compact(v, False)}" for k, v in value.items())
        return inner if top else f"{{{inner}}}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def settings_table(settings: dict) -> str:
    """`| setting | value |` rows, one per parameter in stored order."""
    rows = ["| `{}` | {} |".format(key, compact(value).replace("|", r"\|")) for key, value in settings.items()]
    return "\n".join(["| setting | value |", "|---|---|", *rows])


def demoted(markdown: str, levels: int = 2) -> str:
    """`markdown` with every heading `levels` deeper, so a notebook's sections sit under its report heading."""
    return re.sub(r"^(#{1,6}) ", lambda m: "#" * min(6, len(m[1]) + levels) + " ", markdown, flags=re.M)


# ---- the report ------------------------------------------------------------------------------------

def section(path: Path, figures_dir: Path = FIGURES_DIR, root: Path = REPO_ROOT) -> str:
    """One notebook's part of the report: title, questions, figures, answers and settings."""
    nb = nbformat.read(path, as_version=4)
    folder = figures_dir / path.stem
    results_file = folder / "results.json"
    settings = json.loads(results_file.read_text()).get("settings", {}) if results_file.is_file() else {}
    figures = [f"![{png.stem.replace('_', ' ')}]({png.relative_to(root).as_posix()})"
               for png in sorted(folder.glob("*.png"))]
    parts = [f"### {title(nb)}", f"Notebook: [`{path.relative_to(root).as_posix()}`]"
             f"({path.relative_to(root).as_posix()})", questions(nb), *figures,
             *(demoted(cell) for cell in report_cells(nb)),
             f"<details><summary>Settings of this run</summary>\n\n{settings_table(settings)}\n\n</details>"]
    return "\n\n".join(part for part in parts if part)


def build_report(paths: list[Path], figures_dir: Path = FIGURES_DIR, root: Path = REPO_ROOT) -> str:
    """REPORT.md: an introduction, then each group of notebooks under its heading."""
    lines = ["# Report", "",
             "The answers to HW1's report questions. Every section below is copied from its notebook by "
             "`python -m hw1utils.report`: the questions from the notebook's opening, its figures, and the "
             "cells that discuss the results (\"What we see\", \"Comments\"), which the notebook's last cell "
             "checks sentence by sentence against the run. Edit the notebook, never this file.", ""]
    group = None
    for path in paths:
        prefix = path.stem[:3]
        if prefix != group:
            group = prefix
            lines += [f"## {prefix} {GROUPS.get(prefix, '')}".rstrip(), ""]
        lines += [section(path, figures_dir, root), ""]
    return "\n".join(lines)


def timing_table(timings: dict) -> str:
    """README's timing table from the benchmark's file: seconds per notebook at each size it measured."""
    sizes = list(timings["sizes"])
    stems = list(next(iter(timings["sizes"].values()))["seconds"])
    rows = [f"| notebook | {' | '.join(f'{size} (s)' for size in sizes)} |", "|---|" + "---|" * len(sizes)]
    for stem in stems:
        cells = [f"{timings['sizes'][size]['seconds'].get(stem, float('nan')):.0f}" for size in sizes]
        rows.append(f"| {stem} | {' | '.join(cells)} |")
    totals = [f"**{timings['sizes'][size]['total']:.0f}**" for size in sizes]
    rows.append(f"| **whole suite, wall** | {' | '.join(totals)} |")
    machine = timings["machine"]
    where = (f"\nMeasured by `python benchmarks/bench_suite.py --save` on {machine['cpu_cores']} CPU cores "
             f"({machine['device']}, torch {machine['torch']}), cache off, two notebooks side by side at one "
             "thread each. Datasets: " + "; ".join(f"{size}: {timings['sizes'][size].get('dataset', 'mnist')}"
                                                   for size in sizes) + ".\n")
    return "\n".join(rows) + "\n" + where


def fresh_readme(text: str, timings_file: Path = TIMINGS) -> str:
    """README.md with its timing block rewritten from the benchmark's file (unchanged when the file is absent)."""
    if not timings_file.is_file():
        return text
    table = timing_table(json.loads(timings_file.read_text()))
    return TIMING_BLOCK.sub(lambda m: m["head"] + table + m["tail"], text)


def problems(paths: list[Path], report_text: str, readme_text: str, figures_dir: Path = FIGURES_DIR,
             root: Path = REPO_ROOT, timings_file: Path = TIMINGS) -> list[str]:
    """Everything that is stale or unchecked: claims not in the text, REPORT.md, README's table and images."""
    found = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        found += [f"{path.name}: the check {key!r} is not a sentence of the cells tagged `report`"
                  for key in unwritten_claims(nb)]
        if not (figures_dir / path.stem / "results.json").is_file():
            found.append(f"{path.name}: figures/{path.stem}/results.json is missing; run the notebook")
    if report_text != build_report(paths, figures_dir, root):
        found.append(f"{REPORT.name} is stale: a notebook's text, figures or settings changed")
    if readme_text != fresh_readme(readme_text, timings_file):
        found.append(f"{README.name}'s timing table is stale: {timings_file.name} changed")
    found += [f"{README.name}: figure {m['path']} is missing" for m in FIGURE.finditer(readme_text)
              if "://" not in m["path"] and not (root / m["path"]).is_file()]
    return found


def main(argv: list[str] | None = None) -> int:
    """Rewrite REPORT.md and README's timing table, or with --check report whether they are current."""
    parser = argparse.ArgumentParser(prog="python -m hw1utils.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when anything is stale")
    args = parser.parse_args(argv)
    paths = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
    report_text = REPORT.read_text() if REPORT.is_file() else ""
    readme_text = README.read_text()
    if not args.check:
        report_text, readme_text = build_report(paths), fresh_readme(readme_text)
        REPORT.write_text(report_text)
        README.write_text(readme_text)
        print(f"wrote {REPORT.name} ({len(paths)} notebooks) and {README.name}'s timing table")
    found = problems(paths, report_text, readme_text)
    for line in found:
        print(line, file=sys.stderr)
    if found and args.check:
        print(f"{len(found)} problem(s); stale files are rewritten by `python -m hw1utils.report`", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
