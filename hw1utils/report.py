"""Keep README.md in step with figures/*/results.json, so text, numbers and figures agree.

    python -m hw1utils.report           # rewrite every generated part of README.md
    python -m hw1utils.report --check   # exit 1, one line per problem on stderr, if README.md is not current

README.md is written by hand, with two kinds of generated text in it (STEM names a notebook and its
folder figures/STEM/):

1. Inline values: only VALUE is rewritten, as format(value, FORMAT) of the value at the dot path KEY
   of results.json (integer parts index lists, -1 is the last item; FORMAT is a Python format spec
   such as .3g, .1%, `,` or d, empty for str()):
       the loss fell to <!-- 1-2b_gradient_norm:mnist.train_loss.-1:.3g -->0.0432<!-- /value --> after ...
2. Settings tables: the body becomes a table `| setting | value |` with one row per key of
   results["settings"], in stored order (never typed by hand):
       <!-- BEGIN settings:1-2b_gradient_norm -->
       <!-- END settings:1-2b_gradient_norm -->

A placeholder right after a backtick (an example in a code span) is left alone.
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
from typing import NamedTuple
from urllib.parse import unquote

from .config import FIGURES_DIR, REPO_ROOT

README = REPO_ROOT / "README.md"
# Each kind of generated text has groups head, body and tail, of which only body is rewritten. Neither
# matches right after a backtick, so that an example in a code span is left alone.
VALUE = re.compile(r"(?<!`)(?P<head><!-- (?P<stem>[\w.-]+):(?P<key>[^:<>\n]+):(?P<fmt>[^<>\n]*?) -->)"
                   r"(?P<body>.*?)(?P<tail><!-- /value -->)")
SETTINGS = re.compile(r"(?<!`)(?P<head><!-- BEGIN settings:(?P<stem>[\w.-]+) -->\n)(?P<body>.*?)"
                      r"(?P<tail><!-- END settings:(?P=stem) -->)", re.S)
FIGURE = re.compile(r"!\[[^\]\n]*\]\((?P<path>[^)\s]+)")

Problem = tuple[int, str]  # (position in the text, message)
Loader = Callable[[str], dict]  # results.json of a notebook stem


def results_path(stem: str, figures_dir: Path = FIGURES_DIR) -> Path:
    """Where the notebook `stem` stores its results.json."""
    return figures_dir / stem / "results.json"


def load_results(stem: str, figures_dir: Path = FIGURES_DIR) -> dict:
    """The notebook's results.json (ValueError naming the notebook to run when it is missing)."""
    path = results_path(stem, figures_dir)
    if not path.is_file():
        raise ValueError(f"{path} is missing: run the notebook notebooks/{stem}.ipynb first")
    return json.loads(path.read_text())


def _loader(figures_dir: Path) -> Loader:
    """load_results for one pass, reading each results.json once."""
    return functools.cache(lambda stem: load_results(stem, figures_dir))


# ---- 1. inline values ----------------------------------------------------------------------------

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


def fresh_value(m: re.Match, load: Loader, figures_dir: Path = FIGURES_DIR) -> str:
    """The text a VALUE placeholder should show now (ValueError when it cannot be filled)."""
    value = lookup(load(m["stem"]), m["key"], results_path(m["stem"], figures_dir))
    try:
        return format(value, m["fmt"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"cannot format {value!r} with {m['fmt']!r}: {err}") from None


# ---- 2. settings tables --------------------------------------------------------------------------

def compact(value, top: bool = True) -> str:
    """A settings value as one table cell: lists joined with ", ", floats with :g, dicts as key: value."""
    if isinstance(value, (list, tuple)):
        inner = ", ".join(compact(v, False) for v in value)
        return inner if top else f"[{inner}]"
    if isinstance(value, dict):
        inner = ", ".join(f"{k}: {compact(v, False)}" for k, v in value.items())
        return inner if top else f"{{{inner}}}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def fresh_settings(m: re.Match, load: Loader, figures_dir: Path = FIGURES_DIR) -> str:
    """The body a SETTINGS block should hold now: a table of results["settings"], one row per key in stored order."""
    settings = load(m["stem"]).get("settings")
    if not isinstance(settings, dict):
        raise ValueError(f"{results_path(m['stem'], figures_dir)} has no 'settings' dict")
    rows = ["| `{}` | {} |".format(key, compact(value).replace("|", r"\|")) for key, value in settings.items()]
    return "\n".join(["| setting | value |", "|---|---|", *rows]) + "\n\n"


# ---- all together --------------------------------------------------------------------------------

class Kind(NamedTuple):
    """One kind of generated text: where it lies, what it should say now, and how problems name it."""

    pattern: re.Pattern  # with groups head, body and tail
    fresh: Callable[[re.Match, Loader, Path], str]  # the body it should hold now (ValueError if it cannot be made)
    name: Callable[[re.Match], str]  # how a problem message names one match
    quote: bool  # whether a stale message quotes both bodies (short ones only)


KINDS = (Kind(VALUE, fresh_value, lambda m: m["head"], quote=True),
         Kind(SETTINGS, fresh_settings, lambda m: f"settings table of {m['stem']}", quote=False))


def fill(text: str, figures_dir: Path = FIGURES_DIR) -> str:
    """`text` with every generated part re-rendered (parts that cannot be filled are left as they are)."""
    load = _loader(figures_dir)

    def refreshed(kind: Kind, m: re.Match) -> str:
        """One match with a fresh body, or unchanged when it cannot be made."""
        try:
            return m["head"] + kind.fresh(m, load, figures_dir) + m["tail"]
        except ValueError:
            return m[0]
    for kind in KINDS:
        text = kind.pattern.sub(functools.partial(refreshed, kind), text)
    return text


def problems(text: str, figures_dir: Path = FIGURES_DIR) -> Iterator[Problem]:
    """Generated parts that are stale, or whose key or results.json is missing."""
    load = _loader(figures_dir)
    for kind in KINDS:
        for m in kind.pattern.finditer(text):
            try:
                fresh = kind.fresh(m, load, figures_dir)
            except ValueError as err:
                yield m.start(), f"{kind.name(m)}: {err}"
                continue
            if fresh != m["body"]:
                shown = f": README shows {m['body']!r}, results.json gives {fresh!r}" if kind.quote else ""
                yield m.start(), f"{kind.name(m)} is stale{shown}"


def figure_problems(text: str, root: Path = REPO_ROOT) -> Iterator[Problem]:
    """Embedded images whose file is missing (paths relative to `root`; URLs are not checked)."""
    for m in FIGURE.finditer(text):
        path = m["path"]
        if "://" not in path and not path.startswith(("#", "data:")) and not (root / unquote(path)).is_file():
            yield m.start(), f"figure {path} is missing"


def _line(text: str, pos: int) -> int:
    """The 1-based line number of position `pos` in `text`."""
    return text.count("\n", 0, pos) + 1


def check(text: str, figures_dir: Path = FIGURES_DIR, root: Path = REPO_ROOT, name: str = "README.md") -> list[str]:
    """One line per problem in `text`, in file order: "NAME:LINE: message"; empty when all is current."""
    found = [*problems(text, figures_dir), *figure_problems(text, root)]
    return [f"{name}:{_line(text, pos)}: {msg}" for pos, msg in sorted(found)]


def main(argv: list[str] | None = None) -> int:
    """Rewrite README.md, or with --check report whether it is current."""
    parser = argparse.ArgumentParser(prog="python -m hw1utils.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when README.md is not current")
    args = parser.parse_args(argv)
    text = README.read_text()
    if not args.check:
        fresh = fill(text, FIGURES_DIR)
        if fresh != text:
            README.write_text(fresh)
        print(f"rewrote {len(VALUE.findall(fresh))} values and {len(SETTINGS.findall(fresh))} settings tables "
              f"of {README.name}")
        text = fresh
    found = check(text, FIGURES_DIR, REPO_ROOT, README.name)
    for line in found:
        print(line, file=sys.stderr)
    if found and args.check:
        print(f"{README.name}: {len(found)} problem(s); stale parts are fixed by `python -m hw1utils.report`",
              file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
