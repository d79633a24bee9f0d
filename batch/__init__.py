"""Event-driven batch inference: an S3 upload starts one container job that runs a model over
a whole file (JSON Lines of infer requests, or a dense .npy tensor) in resumable chunks.

Everything here ships; batch/shipping.txt says where: the Lambda-side modules (keys, jobs,
submit, trigger, state, jobs_api, aws) import only boto3, Powertools, `model_api` and the
standard library and ship in BatchLayer; the runner's modules (runner, reader, writer,
checkpoint, microbatch, progress, models) add numpy and onnxruntime and ship in the container
image. What only plays AWS on this machine (`make batch-local`, `make serve`'s batch side, the
local submitter) is local_api.batch, which ships nowhere.
"""
