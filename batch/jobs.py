"""The jobs table (DynamoDB): one item per job, keyed by job id, holding its state and counts.

States: submitting -> submitted -> running -> succeeded | failed; `submit_failed` when the
Batch API refused a submission (the retried event may claim it again). A job created through the
API starts `awaiting_upload` (its upload claims it); `erasing` while DELETE erases it, after
which the item is gone: every write of the runner is conditional on neither, so an erased job is
never brought back by a late update (JobErased). The trigger claims a
job with a conditional put, which is what makes it submit at most one job per object version;
the runner updates state and counts as it goes, and the jobs API reads an item back. A job
whose runner could not record its end is finished by batch.state (`failed`, with the reason).

Where a job runs is the record's `compute` field, set when it is submitted: "aws-batch" (its
`batch_job_id` is AWS Batch's, which DescribeJobs and TerminateJob take) or "local" (the local
submitter of local_api.batch: no Batch job to ask or stop). A record without it predates the
field and ran on AWS Batch.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from botocore.config import Config
from botocore.exceptions import ClientError

from batch.aws import resource

SUBMITTING = "submitting"
SUBMIT_FAILED = "submit_failed"
SUBMITTED = "submitted"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
AWAITING_UPLOAD = "awaiting_upload"
ERASING = "erasing"
FINAL = (SUCCEEDED, FAILED)
# An array job's children (`shard_states`) have the job's states, and these two: a child that
# stopped because another failed the job, and, as the jobs API shows it, one that will
# (batch.jobs_api.child_state)
STOPPED = "stopped"
STOPPING = "stopping"
# Where a job runs: the record's `compute` field (see the module's docstring).
AWS_BATCH = "aws-batch"
LOCAL = "local"
COUNTS = ("rows_read", "outputs_written", "errors")
# A claim lives as long as the invocation that holds it; then a retried event may take it over.
_CLAIMABLE = ("attribute_not_exists(job_id) OR #s = :submit_failed "
              "OR (#s = :submitting AND claim_expires_at < :now)")


def aws_batch_job(record: dict[str, Any]) -> str | None:
    """The AWS Batch job id of a job that runs on AWS Batch and has one, else None (a local
    job, or one not submitted yet)."""
    if record.get("compute", AWS_BATCH) != AWS_BATCH:
        return None
    return str(record.get("batch_job_id") or "") or None


class JobErased(RuntimeError):
    """The job is being erased (DELETE), or is gone: whoever is working on it must stop."""


def _plain(value: Any) -> Any:
    """DynamoDB numbers come back as Decimal; JSON wants int or float."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _conditional_failure(error: ClientError) -> bool:
    return bool(error.response["Error"]["Code"] == "ConditionalCheckFailedException")


class JobStore:
    """Reads and writes job items; every write that could race is conditional."""

    def __init__(self, table_name: str, config: Config | None = None) -> None:
        """`config`: botocore's timeouts and retries (default: batch.aws.retry_config)."""
        self.table_name = table_name
        self.table = resource("dynamodb", config).Table(table_name)

    def get(self, job_id: str) -> dict[str, Any] | None:
        item = self.table.get_item(Key={"job_id": job_id}, ConsistentRead=True).get("Item")
        return _plain(item) if item else None

    def claim(self, item: dict[str, Any], token: str, expires_at: float,
              issued: bool = False) -> bool:
        """Write `item` as `submitting`, owned by `token`, unless someone else owns the job.
        `issued` (a job the API created): only while it is `awaiting_upload`, never when the
        item is gone (an upload after DELETE starts nothing)."""
        now = time.time()
        record = {**item, "status": SUBMITTING, "claim_token": token,
                  "claim_expires_at": Decimal(str(round(expires_at, 3))),
                  "updated_at": Decimal(str(round(now, 3)))}
        if issued:
            return self._put(record, "#s = :awaiting", {":awaiting": AWAITING_UPLOAD})
        return self._put(record, _CLAIMABLE, {":submit_failed": SUBMIT_FAILED,
                                              ":submitting": SUBMITTING,
                                              ":now": Decimal(str(round(now, 3)))})

    def create(self, item: dict[str, Any]) -> bool:
        """Write a new job item (the API's, `awaiting_upload`); False when the id is taken."""
        return self._put({**item, "updated_at": _now()}, "attribute_not_exists(job_id)", None)

    def mark_erasing(self, job_id: str) -> dict[str, Any] | None:
        """Set `erasing` on an existing job; its item as it was before, or None when gone."""
        try:
            answer = self.table.update_item(
                Key={"job_id": job_id}, UpdateExpression="SET #s = :erasing, updated_at = :now",
                ConditionExpression="attribute_exists(job_id)",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":erasing": ERASING, ":now": _now()},
                ReturnValues="ALL_OLD")
        except ClientError as error:
            if _conditional_failure(error):
                return None
            raise
        return _plain(answer["Attributes"])

    def delete(self, job_id: str) -> None:
        self.table.delete_item(Key={"job_id": job_id})

    def live(self, job_id: str) -> dict[str, Any]:
        """The job's item, unless it is being erased or gone (JobErased)."""
        record = self.get(job_id)
        if record is None or record.get("status") == ERASING:
            raise JobErased(f"job {job_id} was erased")
        return record

    def release(self, item: dict[str, Any], token: str, status: str, **fields: Any) -> bool:
        """Move a job this token claimed to `status` (submitted, submit_failed, failed).

        False when the job moved on without us (the runner already started it): not an error.
        """
        record = {**item, **fields, "status": status, "updated_at": _now()}
        record.pop("claim_token", None)
        record.pop("claim_expires_at", None)
        return self._put(record, "#s = :submitting AND claim_token = :token",
                         {":submitting": SUBMITTING, ":token": token})

    def reject(self, item: dict[str, Any], reason: str, issued: bool = False) -> bool:
        """Record an upload that cannot run (unknown model, empty file) as failed, once;
        `issued`: the upload of a job the API created, while that job awaits it."""
        record = {**item, "status": FAILED, "reason": reason, "updated_at": _now()}
        if issued:
            return self._put(record, "#s = :awaiting", {":awaiting": AWAITING_UPLOAD})
        return self._put(record, "attribute_not_exists(job_id)", None)

    def update(self, job_id: str, status: str | None = None, fields: dict[str, Any] | None = None,
               increment_attempts: bool = False, remove: tuple[str, ...] = (),
               first: dict[str, Any] | None = None) -> dict[str, Any]:
        """Set `fields` (and `status`) on the runner's job, and each of `first` that the job
        has not got yet (DynamoDB's if_not_exists: the first attempt's `started_at` stays
        through retries and an array job's children); drop the `remove` attributes. The job's
        item as the update left it (no second request to read it back). JobErased when the
        job is being erased or gone (the update would bring it back)."""
        values: dict[str, Any] = {":updated_at": _now(), ":erasing": ERASING}
        names: dict[str, str] = {"#s": "status"}
        sets = ["updated_at = :updated_at"]
        if status is not None:
            sets.append("#s = :status")
            values[":status"] = status
        for index, (name, value) in enumerate((fields or {}).items()):
            names[f"#f{index}"] = name
            values[f":f{index}"] = _number(value)
            sets.append(f"#f{index} = :f{index}")
        for index, (name, value) in enumerate((first or {}).items()):
            names[f"#o{index}"] = name
            values[f":o{index}"] = _number(value)
            sets.append(f"#o{index} = if_not_exists(#o{index}, :o{index})")
        expression = "SET " + ", ".join(sets)
        if increment_attempts:
            expression += " ADD attempts :one"
            values[":one"] = 1
        for index, name in enumerate(remove):
            names[f"#r{index}"] = name
        if remove:
            expression += " REMOVE " + ", ".join(f"#r{i}" for i in range(len(remove)))
        try:
            answer = self.table.update_item(
                Key={"job_id": job_id}, UpdateExpression=expression,
                ConditionExpression="attribute_exists(job_id) AND #s <> :erasing",
                ExpressionAttributeValues=values, ExpressionAttributeNames=names,
                ReturnValues="ALL_NEW")
        except ClientError as error:
            if _conditional_failure(error):
                raise JobErased(f"job {job_id} was erased") from None
            raise
        return _plain(answer["Attributes"])

    def start_unless_failed(self, job_id: str) -> bool:
        """Set an array job `running` as one of its children starts, unless another child has
        failed it already (False then: the child stops). JobErased when it is being erased
        or gone."""
        try:
            self.table.update_item(
                Key={"job_id": job_id}, UpdateExpression="SET #s = :running, updated_at = :now",
                ConditionExpression="attribute_exists(job_id) AND NOT #s IN (:erasing, :failed)",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":running": RUNNING, ":now": _now(),
                                           ":erasing": ERASING, ":failed": FAILED})
        except ClientError as error:
            if not _conditional_failure(error):
                raise
            if (self.get(job_id) or {}).get("status") == FAILED:
                return False
            raise JobErased(f"job {job_id} was erased") from None
        return True

    def update_shard(self, job_id: str, index: int, entry: dict[str, Any],
                     merge: bool = False) -> None:
        """Set child `index`'s entry of an array job (`shard_states`, a map from the child's
        index to its {state, rows, ...}, written by the trigger): each child writes only its
        own; `merge`: set these fields of the entry, keep its others (its counts). JobErased
        when the job is being erased or gone."""
        names = {"#s": "status"}
        values = {":now": _now(), ":erasing": ERASING}
        live = "attribute_exists(job_id) AND #s <> :erasing"
        if merge:
            fields = {f"#k{n}": key for n, key in enumerate(entry)}
            sets = ", ".join(f"shard_states.#i.#k{n} = :v{n}" for n in range(len(entry)))
            try:
                self.table.update_item(
                    Key={"job_id": job_id}, ConditionExpression=live,
                    UpdateExpression=f"SET {sets}, updated_at = :now",
                    ExpressionAttributeNames={**names, "#i": str(index), **fields},
                    ExpressionAttributeValues={**values, **{
                        f":v{n}": _number(value) for n, value in enumerate(entry.values())}})
                return
            except ClientError as error:
                if _conditional_failure(error):
                    raise JobErased(f"job {job_id} was erased") from None
                if error.response["Error"]["Code"] != "ValidationException":
                    raise  # else no such entry yet: written whole below
        for _ in range(2):
            try:
                self.table.update_item(
                    Key={"job_id": job_id}, ConditionExpression=live,
                    UpdateExpression="SET shard_states.#i = :entry, updated_at = :now",
                    ExpressionAttributeNames={**names, "#i": str(index)},
                    ExpressionAttributeValues={**values, ":entry": _number(entry)})
                return
            except ClientError as error:
                if _conditional_failure(error):
                    raise JobErased(f"job {job_id} was erased") from None
                if error.response["Error"]["Code"] != "ValidationException":
                    raise
            try:  # no map yet (a runner started by hand): make it, unless another child did
                self.table.update_item(
                    Key={"job_id": job_id},
                    ConditionExpression=live + " AND attribute_not_exists(shard_states)",
                    UpdateExpression="SET shard_states = :map, updated_at = :now",
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues={**values,
                                               ":map": {str(index): _number(entry)}})
                return
            except ClientError as error:
                if not _conditional_failure(error):
                    raise
        raise JobErased(f"job {job_id} was erased")

    def finish(self, job_id: str, status: str, not_if: str, fields: dict[str, Any]) -> bool:
        """Set a final `status` and `fields` on an existing job unless its status is `not_if`
        (so that a success the runner recorded is never overwritten); False when it was."""
        names = {"#s": "status", **{f"#f{i}": name for i, name in enumerate(fields)}}
        values = {":status": status, ":not_if": not_if, ":updated_at": _now(),
                  **{f":f{i}": _number(value) for i, value in enumerate(fields.values())}}
        sets = ["#s = :status", "updated_at = :updated_at",
                *(f"#f{i} = :f{i}" for i in range(len(fields)))]
        try:
            self.table.update_item(
                Key={"job_id": job_id}, UpdateExpression="SET " + ", ".join(sets),
                ConditionExpression="attribute_exists(job_id) AND #s <> :not_if",
                ExpressionAttributeNames=names, ExpressionAttributeValues=values)
        except ClientError as error:
            if _conditional_failure(error):
                return False
            raise
        return True

    def _put(self, record: dict[str, Any], condition: str, values: dict[str, Any] | None) -> bool:
        kwargs: dict[str, Any] = {"Item": {k: _number(v) for k, v in record.items()},
                                  "ConditionExpression": condition}
        if "#s" in condition:
            kwargs["ExpressionAttributeNames"] = {"#s": "status"}
        if values:
            kwargs["ExpressionAttributeValues"] = values
        try:
            self.table.put_item(**kwargs)
        except ClientError as error:
            if _conditional_failure(error):
                return False
            raise
        return True


def _now() -> Decimal:
    return Decimal(str(round(time.time(), 3)))


def _number(value: Any) -> Any:
    """DynamoDB takes Decimal, not float."""
    if isinstance(value, float):
        return Decimal(str(round(value, 6)))
    if isinstance(value, dict):
        return {k: _number(v) for k, v in value.items()}
    return value
