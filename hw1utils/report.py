"""Keep README.md in step with figures/*/results.json, so text, numbers and figures agree.

    python -m hw1utils.report           # rewrite every generated part of README.md
    python -m hw1utils.report --check   # exit 1, one line per problem on stderr, if README.md is not current

README.md may hold three kinds of generated text (STEM names a notebook and its folder figures/STEM/):

1. Old generated sections (notebooks not yet converted): the whole body between the markers is
   written from results["report"] ("settings" and "findings": lists of markdown sentences;
   "figures": list of {"file", "caption"}):
       <!-- BEGIN report:1-2b_gradient_norm -->
       ...
       <!-- END report:1-2b_gradient_norm -->
2. Inline values in prose written by a person: only VALUE is rewritten, as format(value, FORMAT) of
   the value at the dot path KEY of results.json (integer parts index lists, -1 is the last item;
   FORMAT is a Python format spec such as .3g, .1%, `,` or d, empty for str()):
       the loss fell to <!-- 1-2b_gradient_norm:mnist.train_loss.-1:.3g -->0.0432<!-- /value --> after ...
3. Settings tables: the body becomes a table `| setting | value |` with one row per key of
   results["settings"], in stored order (never typed by hand):
       <!-- BEGIN settings:1-2b_gradient_norm -->
       <!-- END settings:1-2b_gradient_norm -->

Inline values and settings tables inside an old section are left to that section's renderer.
--check also reports placeholders whose key or results.json is missing, and markdown images
![caption](path) whose file is missing.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import json
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import unquote

from .config import FIGURES_DIR, REPO_ROOT

README = REPO_ROOT / "README.md"
MARKER = re.compile(r"(<!-- BEGIN report:(?P<stem>[\w.-]+) -->\n)(?P<body>.*?)(<!-- END report:(?P=stem) -->)", re.S)
# not after a backtick, so that an example in a code span is left alone
VALUE = re.compile(r"(?<!`)(?P<tag><!-- (?P<stem>[\w.-]+):(?P<key>[^:<>\n]+):(?P<fmt>[^<>\n]*?) -->)"
                   r"(?P<value>.*?)(?P<end><!-- /value -->)")
SETTINGS = re.compile(r"(<!-- BEGIN settings:(?P<stem>[\w.-]+) -->\n)(?P<body>.*?)(<!-- END settings:(?P=stem) -->)",
                      re.S)
FIGURE = re.compile(r"!\[[^\]\n]*\]\((?P<path>[^)\s]+)")

Problem = tuple[int, str]  # (position in the text, message)


def results_path(stem: str, figures_dir: Path = FIGURES_DIR) -> Path:
    """Where the notebook `stem` stores its results.json."""
    return figures_dir / stem / "results.json"


def load_results(stem: str, figures_dir: Path = FIGURES_DIR) -> dict:
    """The notebook's results.json (ValueError naming the notebook to run when it is missing)."""
    path = results_path(stem, figures_dir)
    if not path.is_file():
        raise ValueError(f"{path} is missing: run the notebook notebooks/{stem}.ipynb first")
    return json.loads(path.read_text())


def load_report(stem: str, figures_dir: Path = FIGURES_DIR) -> tuple[dict, dict]:
    """The notebook's results.json, and its "report" entry (ValueError when either is missing)."""
    results = load_results(stem, figures_dir)
    if "report" not in results:
        raise ValueError(f"{results_path(stem, figures_dir)} has no 'report' entry: "
                         "the notebook must store settings, findings and figures")
    return results, results["report"]


# ---- 1. old generated sections -------------------------------------------------------------------

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


def section_problems(text: str, figures_dir: Path = FIGURES_DIR, root: Path = REPO_ROOT) -> Iterator[Problem]:
    """Old sections that are stale or whose results cannot be read."""
    for m in MARKER.finditer(text):
        try:
            if render(m["stem"], figures_dir, root) != m["body"]:
                yield m.start(), f"section report:{m['stem']} is stale"
        except ValueError as err:
            yield m.start(), str(err)


# ---- 2. inline values ----------------------------------------------------------------------------

def _outside_sections(text: str) -> Callable[[int], bool]:
    """A test of whether a position in `text` lies outside every old generated section."""
    spans = [m.span() for m in MARKER.finditer(text)]
    return lambda pos: not any(start <= pos < end for start, end in spans)


def _step(node, part: str):
    """node[part] for a dict, node[int(part)] for a list; LookupError otherwise."""
    if isinstance(node, dict) and part in node:
        return node[part]
    if isinstance(node, list) and re.fullmatch(r"-?\d+", part) and -len(node) <= int(part) < len(node):
        return node[int(part)]
    raise LookupError(part)


def _nearest(node, part: str) -> str:
    """What exists where `part` was looked for: the closest keys, a list's index range, or a leaf."""
    if isinstance(node, dict):
        keys = [str(k) for k in node]
        return "nearest keys: " + ", ".join(difflib.get_close_matches(part, keys, 3, 0.3) or keys[:5])
    if isinstance(node, list):
        return f"a list of {len(node)} items there (indices {-len(node)} to {len(node) - 1})"
    return f"a value of type {type(node).__name__} there, which has no keys"


def lookup(results: dict, key: str, path: Path | str = "results.json"):
    """The value at dot path `key` (ValueError naming the key, the file and the nearest keys)."""
    node, parts = results, key.split(".")
    for depth, part in enumerate(parts):
        try:
            node = _step(node, part)
        except LookupError:
            level = ".".join(parts[:depth]) or "top level"
            message = f"no key {key!r} in {path} ({part!r} not found at {level}; {_nearest(node, part)})"
            raise ValueError(message) from None
    return node


def fresh_value(m: re.Match, load: Callable[[str], dict], figures_dir: Path = FIGURES_DIR) -> str:
    """The text a VALUE placeholder should show now (ValueError when it cannot be filled)."""
    value = lookup(load(m["stem"]), m["key"], results_path(m["stem"], figures_dir))
    try:
        return format(value, m["fmt"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"cannot format {value!r} with {m['fmt']!r}: {err}") from None


def _loader(figures_dir: Path) -> Callable[[str], dict]:
    """load_results for one pass, reading each results.json once."""
    return functools.cache(lambda stem: load_results(stem, figures_dir))


def fill_values(text: str, figures_dir: Path = FIGURES_DIR) -> str:
    """`text` with every inline value outside old sections re-rendered (broken placeholders left as they are)."""
    load, outside = _loader(figures_dir), _outside_sections(text)

    def fill(m: re.Match) -> str:
        """One placeholder, refreshed when it can be."""
        if outside(m.start()):
            try:
                return m["tag"] + fresh_value(m, load, figures_dir) + m["end"]
            except ValueError:
                pass
        return m[0]
    return VALUE.sub(fill, text)


def value_problems(text: str, figures_dir: Path = FIGURES_DIR) -> Iterator[Problem]:
    """Inline values that are stale, or whose key or results.json is missing."""
    load, outside = _loader(figures_dir), _outside_sections(text)
    for m in VALUE.finditer(text):
        if not outside(m.start()):
            continue
        try:
            fresh = fresh_value(m, load, figures_dir)
        except ValueError as err:
            yield m.start(), f"{m['tag']}: {err}"
            continue
        if fresh != m["value"]:
            yield m.start(), f"{m['tag']} is stale: README shows {m['value']!r}, results.json gives {fresh!r}"


# ---- 3. settings tables --------------------------------------------------------------------------

def compact(value, top: bool = True) -> str:
    """A settings value as one table cell: lists joined with ", ", floats with :g, dicts as key: value."""
    if isinstance(value, (list, tuple)):
        inner = ", ".join(compact(v, False) for v in value)
        return inner if top else f"[{inner}]"
    if isinstance(value, dict):
        inner = ", ".join(f"{k}: {compact(v, False)}" for k, v in value.items())
        return inner if top else f"{{{inner}}}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def render_settings(stem: str, figures_dir: Path = FIGURES_DIR) -> str:
    """The body of a settings block: a table of results["settings"], one row per key in stored order."""
    settings = load_results(stem, figures_dir).get("settings")
    if not isinstance(settings, dict):
        raise ValueError(f"{results_path(stem, figures_dir)} has no 'settings' dict")
    rows = ["| `{}` | {} |".format(key, compact(value).replace("|", r"\|")) for key, value in settings.items()]
    return "\n".join(["| setting | value |", "|---|---|", *rows]) + "\n\n"


def fill_settings(text: str, figures_dir: Path = FIGURES_DIR) -> str:
    """`text` with every settings block outside old sections re-rendered (unreadable ones left as they are)."""
    outside = _outside_sections(text)

    def fill(m: re.Match) -> str:
        """One settings block, refreshed when it can be."""
        if outside(m.start()):
            try:
                return m.group(1) + render_settings(m["stem"], figures_dir) + m.group(4)
            except ValueError:
                pass
        return m[0]
    return SETTINGS.sub(fill, text)


def settings_problems(text: str, figures_dir: Path = FIGURES_DIR) -> Iterator[Problem]:
    """Settings tables that are stale or whose results cannot be read."""
    outside = _outside_sections(text)
    for m in SETTINGS.finditer(text):
        if not outside(m.start()):
            continue
        try:
            if render_settings(m["stem"], figures_dir) != m["body"]:
                yield m.start(), f"settings table of {m['stem']} is stale"
        except ValueError as err:
            yield m.start(), str(err)


# ---- all together --------------------------------------------------------------------------------

def figure_problems(text: str, root: Path = REPO_ROOT) -> Iterator[Problem]:
    """Embedded images whose file is missing (paths relative to `root`; URLs are not checked)."""
    for m in FIGURE.finditer(text):
        path = m["path"]
        if "://" not in path and not path.startswith(("#", "data:")) and not (root / unquote(path)).is_file():
            yield m.start(), f"figure {path} is missing"


def update(text: str, figures_dir: Path = FIGURES_DIR, root: Path = REPO_ROOT) -> str:
    """`text` with old sections, inline values and settings tables all re-rendered."""
    return fill_settings(fill_values(rewrite(text, figures_dir, root), figures_dir), figures_dir)


def _line(text: str, pos: int) -> int:
    """The 1-based line number of position `pos` in `text`."""
    return text.count("\n", 0, pos) + 1


def check(text: str, figures_dir: Path = FIGURES_DIR, root: Path = REPO_ROOT, name: str = "README.md") -> list[str]:
    """One line per problem in `text`, in file order: "NAME:LINE: message"; empty when all is current."""
    problems = [*section_problems(text, figures_dir, root), *value_problems(text, figures_dir),
                *settings_problems(text, figures_dir), *figure_problems(text, root)]
    return [f"{name}:{_line(text, pos)}: {msg}" for pos, msg in sorted(problems)]


def main(argv: list[str] | None = None) -> int:
    """Rewrite README.md, or with --check report whether it is current."""
    parser = argparse.ArgumentParser(prog="python -m hw1utils.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when README.md is not current")
    args = parser.parse_args(argv)
    text = README.read_text()
    if not args.check:
        try:
            fresh = update(text, FIGURES_DIR, REPO_ROOT)
        except ValueError as err:
            print(err, file=sys.stderr)
            return 1
        if fresh != text:
            README.write_text(fresh)
        print(f"rewrote {len(MARKER.findall(fresh))} sections, {len(VALUE.findall(fresh))} values and "
              f"{len(SETTINGS.findall(fresh))} settings tables of {README.name}")
        text = fresh
    problems = check(text, FIGURES_DIR, REPO_ROOT, README.name)
    for line in problems:
        print(line, file=sys.stderr)
    if problems and args.check:
        print(f"{README.name}: {len(problems)} problem(s); stale parts are fixed by `python -m hw1utils.report`",
              file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
