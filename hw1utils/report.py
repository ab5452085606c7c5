"""Rewrite the generated parts of README.md from figures/*/results.json, so text and figures agree.

    python -m hw1utils.report           # rewrite the marked sections of README.md
    python -m hw1utils.report --check   # exit 1 if README.md is out of date

Each notebook stores under results["report"]: "settings" and "findings" (lists of markdown
sentences whose numbers were computed in the run) and "figures" (list of {"file", "caption"}).
README.md holds, per notebook, a pair of markers between which this module writes that material:
<!-- BEGIN report:STEM --> ... <!-- END report:STEM -->
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from .config import FIGURES_DIR, REPO_ROOT

README = REPO_ROOT / "README.md"
MARKER = re.compile(r"(<!-- BEGIN report:(?P<stem>[\w.-]+) -->\n)(?P<body>.*?)(<!-- END report:(?P=stem) -->)", re.S)


def load_report(stem: str, figures_dir: Path = FIGURES_DIR) -> tuple[dict, dict]:
    """The notebook's results.json, and its "report" entry (ValueError when either is missing)."""
    path = figures_dir / stem / "results.json"
    if not path.is_file():
        raise ValueError(f"{path} is missing: run the notebook notebooks/{stem}.ipynb first")
    results = json.loads(path.read_text())
    if "report" not in results:
        raise ValueError(f"{path} has no 'report' entry: the notebook must store settings, findings and figures")
    return results, results["report"]


def render(stem: str, figures_dir: Path = FIGURES_DIR, root: Path = REPO_ROOT) -> str:
    """Markdown for one notebook: data source, settings, figures with captions, findings."""
    results, report = load_report(stem, figures_dir)
    rel = (figures_dir / stem).resolve().relative_to(root.resolve()).as_posix()
    lines = [f"*Notebook: [`notebooks/{stem}.ipynb`](notebooks/{stem}.ipynb).*"]
    if results.get("source"):
        lines.append(f"*Data: {results['source']}*")
    lines += ["", "**Settings.**", ""] + [f"- {s}" for s in report.get("settings", [])]
    for fig in report.get("figures", []):
        lines += ["", f"![{fig['caption']}]({rel}/{fig['file']})", "", f"*{fig['caption']}*"]
    lines += ["", "**Findings (numbers from this run).**", ""] + [f"- {s}" for s in report.get("findings", [])]
    return "\n".join(lines) + "\n"


def rewrite(text: str, figures_dir: Path = FIGURES_DIR, root: Path = REPO_ROOT) -> str:
    """`text` with every marked section replaced by its freshly rendered body."""
    return MARKER.sub(lambda m: m.group(1) + render(m.group("stem"), figures_dir, root) + m.group(4), text)


def main(argv: list[str] | None = None) -> int:
    """Rewrite README.md, or with --check report whether it is current."""
    parser = argparse.ArgumentParser(prog="python -m hw1utils.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when README.md is stale")
    args = parser.parse_args(argv)
    text = README.read_text()
    fresh = rewrite(text)
    if args.check:
        if fresh != text:
            print("README.md is out of date: run `python -m hw1utils.report`", file=sys.stderr)
            return 1
        return 0
    README.write_text(fresh)
    print(f"rewrote {len(MARKER.findall(text))} sections of {README.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
