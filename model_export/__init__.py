"""Offline training and export of the seed models to ONNX + manifest (the recipes, the checks,
the artifact writers). It knows no registry: `python -m model_registry.export` exports every
model of models.yaml with it.

Manifests are validated with the serving library itself (`model_api`, installed into the venv
with this project: pyproject.toml).
"""
