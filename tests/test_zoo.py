"""Every zoo recipe parses against the typed config, and names a registered data set, model and method."""
from pathlib import Path

import pytest
import timm

import vsd  # noqa: F401  (registers the models)
from vsd.config import load_config
from vsd.data import list_datasets

RECIPES = sorted((Path(__file__).resolve().parents[1] / "zoo").rglob("*.yaml"))


def test_there_are_recipes():
    assert len(RECIPES) >= 3


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_recipe_is_valid(path):
    cfg = load_config(path)
    assert cfg.data.name in list_datasets()
    assert timm.is_model(cfg.model.name), cfg.model.name
