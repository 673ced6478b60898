"""Models: architectures, the recipe, training, the bundle and its one scoring path,
evaluation figures and the MLflow registry."""
