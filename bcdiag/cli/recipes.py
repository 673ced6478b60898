"""How a command turns its options into a `Recipe`."""

from __future__ import annotations

from typing import Any

from bcdiag.models.recipe import Recipe, recipe_for


def build_recipe(dataset: str, location: str | None = None, **options: Any) -> Recipe:
    """`dataset`'s recipe, or the one at `location` (file or ``runs:/…/recipe.json``),
    with the options that were given (not None) replacing its fields."""
    given = {key: value for key, value in options.items() if value is not None}
    if location:
        return Recipe.load(location).changed(**given)
    return recipe_for(dataset, given, source="command-line options")
