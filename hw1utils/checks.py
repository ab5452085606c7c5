"""The final check cell of a notebook: every sentence of its hand-written text, tested against the run."""

from __future__ import annotations


def confirm(claims: dict[str, bool]) -> None:
    """Raise AssertionError naming every sentence whose check failed; print how many held."""
    contradicted = [sentence for sentence, holds in claims.items() if not holds]
    if contradicted:
        raise AssertionError("this run contradicts the text:\n" + "\n".join(f"- {s}" for s in contradicted))
    print(f"all {len(claims)} claims of the text hold in this run" if claims else
          "claims not checked: the text describes the full profile")
