"""Event-driven batch inference: an S3 upload starts one container job that runs a model over
a whole file (JSON Lines of infer requests, or a dense .npy tensor) in resumable chunks.

Lambda-side modules (keys, jobs, submit, trigger, aws) import only boto3 and the standard
library and ship in the BatchLayer; the runner's modules (runner, reader, writer, checkpoint,
microbatch, progress) add numpy, onnxruntime and `model_api` and ship in the container image.
"""
