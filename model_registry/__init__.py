"""The registry of served models (models.yaml) and what is generated from it."""
