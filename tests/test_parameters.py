"""The parameters cell: papermill overrides checked by name and type, the quick profile applied in one place."""

import json

import nbformat
import pytest

from hw1utils import config

CELL = 'PROFILE = "full"  # profile\nEPOCHS = 20  # passes\nLR = 1e-3  # step\nLIMIT = None  # images\nSIZES = (1, 2)\n'


@pytest.fixture
def notebook(monkeypatch, tmp_path):
    """A notebook `nb-test` in a temporary repository, with a quick profile for EPOCHS and LIMIT."""
    (tmp_path / "notebooks").mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(CELL, metadata={"tags": ["parameters"]})]
    nbformat.write(nb, tmp_path / "notebooks" / "nb-test.ipynb")
    monkeypatch.setattr(config, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(config, "_active_profile", None)
    monkeypatch.setitem(config.QUICK, "nb-test", {"EPOCHS": 2, "LIMIT": 100})
    monkeypatch.setenv("HW1_FIGURES", str(tmp_path / "figures"))
    monkeypatch.delenv("HW1_PROFILE", raising=False)
    return {"PROFILE": "full", "EPOCHS": 20, "LR": 1e-3, "LIMIT": None, "SIZES": (1, 2)}


def test_defaults_are_read_from_the_parameters_cell(notebook):
    assert config.parameter_defaults("nb-test") == notebook


def test_full_profile_keeps_the_cell(notebook):
    assert config.apply_parameters("nb-test", dict(notebook)) == notebook
    assert config.profile() == "full"


def test_quick_profile_shrinks_sizes_but_not_explicit_values(notebook):
    namespace = {**notebook, "PROFILE": "quick", "EPOCHS": 3,  # as papermill -p PROFILE quick -p EPOCHS 3
                 "In": ["", 'PROFILE = "full"\n', '# Parameters\nPROFILE = "quick"\nEPOCHS = 3\n']}
    used = config.apply_parameters("nb-test", namespace)
    assert used == {**notebook, "PROFILE": "quick", "EPOCHS": 3, "LIMIT": 100}
    assert namespace["LIMIT"] == 100 and config.profile() == "quick"
    assert config.figure_dir().parent == config.figures_root()


def test_hw1_profile_chooses_when_the_cell_is_left_alone(notebook, monkeypatch):
    monkeypatch.setenv("HW1_PROFILE", "quick")
    assert config.apply_parameters("nb-test", dict(notebook))["EPOCHS"] == 2


def test_unknown_parameter_is_named(notebook):
    namespace = {**notebook, "EPOCH": 3, "In": ["", "# Parameters\nEPOCH = 3\n"]}  # papermill -p EPOCH 3
    with pytest.raises(NameError, match=r"unknown parameter\(s\) EPOCH for nb-test; its parameters are PROFILE"):
        config.apply_parameters("nb-test", namespace)


def test_rerunning_the_cell_in_lab_is_not_an_error(notebook, monkeypatch):
    monkeypatch.setenv("HW1_PROFILE", "quick")
    namespace = {**notebook, "In": ["", "PROFILE = ...", "SETTINGS = ..."]}
    first = config.apply_parameters("nb-test", namespace)
    namespace.update(SETTINGS=first, DEVICE="cpu", x_train=[1.0])  # what later cells define
    assert config.apply_parameters("nb-test", namespace) == first


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("EPOCHS", "3", "an int"), ("EPOCHS", 2.5, "an int"), ("LR", "fast", "a number"), ("LIMIT", 1.5, "an int or None"),
    ("SIZES", 4, "a list"), ("EPOCHS", True, "an int"),
])
def test_wrong_type_is_named_with_the_expected_type(notebook, name, value, expected):
    with pytest.raises(TypeError, match=rf"parameter {name} of nb-test must be {expected}"):
        config.apply_parameters("nb-test", {**notebook, name: value})


def test_lists_from_yaml_become_tuples(notebook):
    namespace = {**notebook, "SIZES": [4, 5]}
    assert config.apply_parameters("nb-test", namespace)["SIZES"] == (4, 5)


def test_unknown_profile_lists_the_valid_ones(notebook, monkeypatch):
    with pytest.raises(ValueError, match=r"PROFILE='fast' is not a profile; use one of \('quick', 'full'\)"):
        config.apply_parameters("nb-test", {**notebook, "PROFILE": "fast"})
    monkeypatch.setenv("HW1_PROFILE", "fast")
    with pytest.raises(ValueError, match="HW1_PROFILE='fast'"):
        config.apply_parameters("nb-test", dict(notebook))


def test_parameters_cell_must_hold_literals_only(notebook, tmp_path):
    path = tmp_path / "notebooks" / "nb-test.ipynb"
    nb = json.loads(path.read_text())
    nb["cells"][0]["source"] = "EPOCHS = 20\nWIDTHS = list(range(EPOCHS))\n"
    path.write_text(json.dumps(nb))
    with pytest.raises(ValueError, match="line 2 assigns an expression"):
        config.parameter_defaults("nb-test")


def test_every_quick_profile_names_real_parameters():
    for stem, sizes in config.QUICK.items():
        defaults = config.parameter_defaults(stem)
        assert set(sizes) <= set(defaults), f"{stem}: QUICK names {set(sizes) - set(defaults)}, not parameters"
        assert defaults.get("PROFILE") == "full", f"{stem}: the parameters cell must set PROFILE = 'full'"
