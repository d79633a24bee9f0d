"""Data capture: what the models see and answer, sampled, desensitised and stored as JSON Lines
(docs/architecture.md, "Data capture"; docs/security.md says what is kept).

    config.py   a model's capture settings (models.yaml `capture`), parsed and checked
    record.py   one captured record: the inputs desensitised by their rules, the outputs
    hook.py     the pipeline hook (sample first, build the record, deliver at flush, count)
    store.py    where records go: the key layout, a folder store, reading and erasure

No AWS here: the S3 store and the Powertools metrics live in model_api/aws/capture.py.
"""
