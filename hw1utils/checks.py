"""The final check cell of a notebook: every sentence of its hand-written text, tested against the run."""

from __future__ import annotations


def applies(profile: str, dataset: str | None = None) -> bool:
    """Whether the text describes this run: the full profile, and MNIST where the text was written from MNIST runs.

    Another dataset (HW1_DATASET, e.g. Fashion-MNIST standing in for full MNIST) is a different task with
    other accuracies and training lengths; the sentences about MNIST are not claims about it.
    """
    return profile == "full" and dataset in (None, "mnist")


def confirm(claims: dict[str, bool]) -> None:
    """Raise AssertionError naming every sentence whose check failed; print how many held."""
    contradicted = [sentence for sentence, holds in claims.items() if not holds]
    if contradicted:
        raise AssertionError("this run contradicts the text:\n" + "\n".join(f"- {s}" for s in contradicted))
    print(f"all {len(claims)} claims of the text hold in this run" if claims else
          "claims not checked: the text describes the full profile (on MNIST where it names MNIST)")
