"""Offline training and export of the seed models to ONNX + manifest (`python -m model_export`).

Manifests are validated with the serving library itself (`model_api`, installed into the venv
with this project: pyproject.toml).
"""
