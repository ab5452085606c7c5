"""The parameters cell: papermill overrides checked by name and type, the quick profile applied in one place."""

import json

import nbformat
import pytest

from hw1utils import config
from hw1utils.notebooks import all_notebooks

CELL = ('PROFILE = "full"  # profile\nEPOCHS = 20  # passes\nLR = 1e-3  # step\nLIMIT = None  # images\n'
        'SIZES = (1, 2)\nQUICK = {"EPOCHS": 2, "LIMIT": 100}  # quick sizes\n')
DEFAULTS = {"PROFILE": "full", "EPOCHS": 20, "LR": 1e-3, "LIMIT": None, "SIZES": (1, 2)}


@pytest.fixture
def namespace(monkeypatch, tmp_path):
    """A notebook's namespace right after its parameters cell ran (IPython's In holds the cell)."""
    monkeypatch.setenv("HW1_FIGURES", str(tmp_path / "figures"))
    monkeypatch.delenv("HW1_PROFILE", raising=False)
    history = ["", CELL, 'P = config.parameters("nb", globals())']
    return {**DEFAULTS, "QUICK": {"EPOCHS": 2, "LIMIT": 100}, "In": history}


def injected(namespace, **values):
    """`namespace` as papermill leaves it after -p NAME VALUE for each of `values`."""
    cell = "# Parameters\n" + "".join(f"{name} = {value!r}\n" for name, value in values.items())
    history = namespace["In"]
    return {**namespace, **values, "In": [*history[:2], cell, *history[2:]]}


def test_full_profile_keeps_the_cell(namespace, tmp_path):
    params = config.parameters("nb", namespace)
    assert params.values == DEFAULTS and params.profile == "full" and params.EPOCHS == 20
    assert params.figures == tmp_path / "figures" / "nb" and params.figures.is_dir()


def test_the_namespace_is_only_read(namespace):
    before = {name: value for name, value in namespace.items()}
    config.parameters("nb", injected(namespace, PROFILE="quick"))
    assert namespace == before


def test_quick_profile_shrinks_sizes_but_not_explicit_values(namespace):
    params = config.parameters("nb", injected(namespace, PROFILE="quick", EPOCHS=3))  # -p PROFILE quick -p EPOCHS 3
    assert params.values == {**DEFAULTS, "PROFILE": "quick", "EPOCHS": 3, "LIMIT": 100}


def test_hw1_profile_chooses_when_the_cell_is_left_alone(namespace, monkeypatch):
    monkeypatch.setenv("HW1_PROFILE", "quick")
    assert config.parameters("nb", namespace).EPOCHS == 2


def test_the_cell_as_it_ran_gives_the_defaults(namespace, monkeypatch):
    """An edit in Lab, saved or not, is the new default; the quick profile takes its sizes from QUICK as it ran."""
    edited = CELL.replace("EPOCHS = 20", "EPOCHS = 5").replace('"EPOCHS": 2', '"EPOCHS": 1')
    later = {**namespace, "EPOCHS": 5, "QUICK": {"EPOCHS": 1, "LIMIT": 100}, "In": [*namespace["In"], edited, "P = ."]}
    assert config.parameters("nb", later).EPOCHS == 5
    monkeypatch.setenv("HW1_PROFILE", "quick")
    assert config.parameters("nb", later).EPOCHS == 1


def test_unknown_parameter_is_named(namespace):
    with pytest.raises(NameError, match=r"unknown parameter\(s\) EPOCH for nb; its parameters are PROFILE"):
        config.parameters("nb", injected(namespace, EPOCH=3))  # papermill -p EPOCH 3


def test_a_missing_parameter_is_named(namespace):
    with pytest.raises(AttributeError, match="nb has no parameter EPOCH; its parameters are PROFILE, EPOCHS"):
        _ = config.parameters("nb", namespace).EPOCH


def test_rerunning_the_cell_in_lab_is_not_an_error(namespace, monkeypatch):
    monkeypatch.setenv("HW1_PROFILE", "quick")
    first = config.parameters("nb", namespace)
    later = {**namespace, "P": first, "DEVICE": "cpu", "In": [*namespace["In"], "DEVICE = config.device()"]}
    assert config.parameters("nb", later) == first


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("EPOCHS", "3", "an int"), ("EPOCHS", 2.5, "an int"), ("LR", "fast", "a number"), ("LIMIT", 1.5, "an int or None"),
    ("SIZES", 4, "a list"), ("EPOCHS", True, "an int"),
])
def test_wrong_type_is_named_with_the_expected_type(namespace, name, value, expected):
    with pytest.raises(TypeError, match=rf"parameter {name} of nb must be {expected}"):
        config.parameters("nb", injected(namespace, **{name: value}))


def test_lists_from_yaml_become_tuples(namespace):
    assert config.parameters("nb", injected(namespace, SIZES=[4, 5])).SIZES == (4, 5)


def test_unknown_profile_lists_the_valid_ones(namespace, monkeypatch):
    with pytest.raises(ValueError, match=r"PROFILE='fast' is not a profile; use one of \('quick', 'full'\)"):
        config.parameters("nb", injected(namespace, PROFILE="fast"))
    monkeypatch.setenv("HW1_PROFILE", "fast")
    with pytest.raises(ValueError, match="HW1_PROFILE='fast'"):
        config.parameters("nb", namespace)


def test_parameters_cell_must_hold_literals_only():
    with pytest.raises(ValueError, match="line 2 assigns an expression"):
        config.literal_assignments("EPOCHS = 20\nWIDTHS = list(range(EPOCHS))\n", "nb.ipynb")


def test_without_the_parameters_cell_the_error_says_what_to_run():
    with pytest.raises(RuntimeError, match="run the cell tagged `parameters` first"):
        config.parameters("nb", {"In": ["", "import torch"]})


def test_results_carry_the_settings_used(namespace, tmp_path):
    params = config.parameters("nb", namespace)
    path = config.save_results(params, {"loss": 0.5})
    assert json.loads(path.read_text()) == {"loss": 0.5, "settings": {**DEFAULTS, "SIZES": [1, 2]}}


@pytest.mark.parametrize("path", all_notebooks(), ids=lambda p: p.stem)
def test_every_quick_profile_names_real_parameters(path):
    cell = next(c for c in nbformat.read(path, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    defaults = config.literal_assignments(cell.source, path.name)
    quick = defaults.pop("QUICK")
    assert set(quick) <= set(defaults), f"QUICK names {set(quick) - set(defaults)}, not parameters"
    assert defaults.get("PROFILE") == "full", "the parameters cell must set PROFILE = 'full'"
