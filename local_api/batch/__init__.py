"""The batch path's AWS played on this machine (no AWS account, no Docker): local only, never
in BatchLayer nor in the runner's image (batch/shipping.py says what ships).

    loop.py       `make batch-local` (python -m local_api.batch.loop): upload, the real
                  trigger, the runner, the real jobs API, download; over a moto server
    s3.py         the local S3 of `make serve` (python -m local_api.batch.s3): moto, presigned
                  URLs refused as S3 refuses them
    stack.py      `make serve`'s batch side: local S3, DynamoDB, EventBridge -> SQS -> the real
                  trigger handler
    submitter.py  the local submitter: the runner as a child process, Batch's retry strategy
                  and spot reclaims played
"""
