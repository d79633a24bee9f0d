"""The stores the API's other routes depend on, as the server's readiness reports them.

The asynchronous jobs routes need the jobs table (DynamoDB) and the batch bucket (S3); where the
server function is given their names (JOBS_TABLE, BATCH_BUCKET), `GET /v2/health/ready` asks
each once, with short timeouts, and a store that does not answer makes the server not ready,
named with the reason (docs/architecture.md, "Overload"). Without the names, nothing is asked.
"""

from __future__ import annotations

from collections.abc import Mapping

# The environment variables that name the stores: the template gives them to the functions of
# the jobs path (and to the server function), the local API and the batch runner read them
JOBS_TABLE_ENV = "JOBS_TABLE"
BATCH_BUCKET_ENV = "BATCH_BUCKET"
# Seconds to connect and to read one answer; one attempt each: a probe must answer quickly.
CONNECT_TIMEOUT_S = 2
READ_TIMEOUT_S = 2


def store_problems(environ: Mapping[str, str]) -> list[str]:
    """What is wrong with the jobs table and the batch bucket named in `environ`: one line per
    store that is unreachable, slow, missing or refusing (DescribeTable, HeadBucket); [] when
    both answer or none is named."""
    table, bucket = environ.get(JOBS_TABLE_ENV), environ.get(BATCH_BUCKET_ENV)
    if not table and not bucket:
        return []
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S,
                    retries={"total_max_attempts": 1, "mode": "standard"})
    problems: list[str] = []
    if table:
        try:
            boto3.client("dynamodb", config=config).describe_table(TableName=table)
        except Exception as error:  # botocore's: whatever it is, the store is not usable
            problems.append(f"the jobs table {table!r} (DynamoDB): {type(error).__name__}: "
                            f"{error}")
    if bucket:
        try:
            boto3.client("s3", config=config).head_bucket(Bucket=bucket)
        except Exception as error:
            problems.append(f"the batch bucket {bucket!r} (S3): {type(error).__name__}: "
                            f"{error}")
    return problems
