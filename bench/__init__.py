"""`make bench`: the served path measured against onnxruntime called directly, in one run.

Sections (each its own module): warm (in-process handler vs `InferenceSession.run`), http
(through the local API), cold (fresh process to first response vs a bare import + session),
size (function + layers vs Lambda's limits) and batch (runner vs a raw onnxruntime loop).
`python -m bench` prints one table and writes bench-results/latest.json.
"""
