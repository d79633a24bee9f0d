"""`make cost` (`python -m bench.cost`): US dollars per 1,000 predictions, from measured durations.

For every registered model: the API (API Gateway REST → the model's Lambda function) at 1 and
32 rows a request, on x86_64 and arm64 prices, component by component; SageMaker Serverless
Inference at the same memory and duration; and the batch path per 1,000 rows on a GPU
instance, spot and on demand. A prediction is one row.

What is measured here, with bench's own code: the warm handler's p50 (bench.warm: the real
functions/inference/app.py handler, model loaded, API Gateway event in, response out; JSON at
1 and 32 rows) and its request and response sizes; the batch runner's rows per second with its
default settings (bench.batch.runner_rows_per_s, S3 on a local moto server); a cold start's
init (imports + module init, from bench-results/latest.json's cold section when `make bench`
wrote one). What a laptop cannot measure is an assumption (`Assumptions`), printed with the
table and settable on the command line: Lambda's CPU share at a memory size, how this machine's
core compares with Lambda's, how often a request meets a cold start, the GPU's speed-up over
the CPU measured here, the spot price's share of on-demand, a batch job's start-up.

Prices live in `PRICES`, one dated table with its sources: updating them is one edit there.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from bench.common import BUILT_TEMPLATE, QUICK_ENV, RESULTS, ROOT
from bench.functions import inference_functions

ARCHITECTURES = ("x86_64", "arm64")
REQUEST_ROWS = (1, 32)
PER = 1000  # predictions (rows) per price
MONTH_S = 30 * 24 * 3600
COST_RESULTS = ROOT / "bench-results" / "cost.json"


@dataclass(frozen=True)
class Prices:
    """US dollars, us-east-1. Every figure must be checked against its page before it is relied
    on: they change, and regions differ."""

    as_of: str
    lambda_gb_second: dict[str, float]  # per architecture
    lambda_request: float
    snapstart_cache_gb_second: float  # Python SnapStart: each published version's snapshot
    snapstart_restore_gb: float  # per GB restored, each cold start
    api_rest_request: float  # REST API, first 333 million requests a month
    sagemaker_serverless_gb_second: float  # $0.00002/s at 1 GB … $0.00012/s at 6 GB
    sagemaker_data_gb: float  # data processed in and out
    gpu_instance_hour: dict[str, float]  # on demand, Linux
    # Data capture's path (docs/architecture.md "Data capture"): a log line, a subscription
    # filter, Firehose, the capture bucket.
    logs_ingest_gb: float  # CloudWatch Logs ingestion (standard logs)
    logs_storage_gb_month: float  # CloudWatch Logs storage, for LogRetentionDays
    firehose_gb: float  # Firehose ingestion, each record rounded up to 5 KB
    s3_storage_gb_month: float  # S3 Standard, for CaptureRetentionDays
    sources: dict[str, str] = field(default_factory=dict)


PRICES = Prices(
    as_of="2026-12 (figures recorded in the project's notes; not re-checked against the pages)",
    lambda_gb_second={"x86_64": 0.0000166667, "arm64": 0.0000133334},
    lambda_request=0.20 / 1e6,
    snapstart_cache_gb_second=0.0000015046,
    snapstart_restore_gb=0.0001397998,
    api_rest_request=3.50 / 1e6,
    sagemaker_serverless_gb_second=0.00002,
    sagemaker_data_gb=0.016,
    gpu_instance_hour={"g4dn.xlarge": 0.526, "g5.xlarge": 1.006},
    logs_ingest_gb=0.50,
    logs_storage_gb_month=0.03,
    firehose_gb=0.029,
    s3_storage_gb_month=0.023,
    sources={
        "capture": "https://aws.amazon.com/cloudwatch/pricing/ (Logs ingestion, storage); "
                   "https://aws.amazon.com/firehose/pricing/ (ingestion, 5 KB rounding); "
                   "https://aws.amazon.com/s3/pricing/ (Standard storage)",
        "lambda": "https://aws.amazon.com/lambda/pricing/ (duration, requests, SnapStart)",
        "api_gateway": "https://aws.amazon.com/api-gateway/pricing/ (REST APIs)",
        "sagemaker": "https://aws.amazon.com/sagemaker/pricing/ (Serverless Inference)",
        "ec2": "https://aws.amazon.com/ec2/pricing/on-demand/ ; spot: "
               "https://aws.amazon.com/ec2/spot/pricing/",
    })


@dataclass(frozen=True)
class Assumptions:
    """What a laptop cannot measure; each is a flag of `python -m bench.cost` (and a make
    variable of `make cost`)."""

    memory_mb: int | None = None  # None: each function's MemorySize in the built template
    full_vcpu_mb: int = 1769  # Lambda gives one vCPU at 1,769 MB, a proportional share below
    lambda_slowdown: float = 1.0  # a Lambda vCPU's time for what this machine's core does in 1
    arm_slowdown: float = 1.0  # arm64's time against x86_64's (never measured here)
    cold_every: int = 1000  # a cold start every N requests (0: never)
    init_ms: float | None = None  # None: the cold section's imports + init, else 200 ms
    snapstart: bool | None = None  # None: as the template's SnapStart parameter defaults
    requests_per_month: int = 1_000_000  # spreads SnapStart's snapshot cache over requests
    gpu_instance: str = "g4dn.xlarge"
    gpu_speedup: float = 1.0  # the GPU instance's rows/s over the CPU rows/s measured here
    spot_share: float = 0.4  # a spot hour's price as a share of on-demand
    batch_job_rows: int = 1_000_000  # rows per batch job (its start-up is spread over them)
    batch_start_s: float = 300.0  # instance start + image pull, billed, per job
    log_retention_days: int = 30  # the template's LogRetentionDays default
    capture_retention_days: int = 90  # the template's CaptureRetentionDays default


# What each assumption means, for --help.
ASSUMPTION_HELP = {
    "memory_mb": "memory of every model function, MB (default: its MemorySize in the template)",
    "full_vcpu_mb": "memory at which Lambda gives one full vCPU (a proportional share below)",
    "lambda_slowdown": "a Lambda vCPU's time for what this machine's core does in 1",
    "arm_slowdown": "arm64's time against x86_64's (not measured here)",
    "cold_every": "a cold start every N requests (0: never)",
    "init_ms": "a cold start's imports + init at a full vCPU, ms (default: the cold section of "
               "bench-results/latest.json, else 200)",
    "snapstart": "price SnapStart as on or off (default: the template's SnapStart parameter)",
    "requests_per_month": "requests a month per model: spreads SnapStart's snapshot cache",
    "gpu_instance": "the batch path's GPU instance type",
    "gpu_speedup": "the GPU instance's rows/s over the CPU rows/s measured here",
    "spot_share": "a spot hour's price as a share of on demand",
    "batch_job_rows": "rows per batch job (its start-up is spread over them)",
    "batch_start_s": "seconds of instance start and image pull billed per batch job",
    "log_retention_days": "days CloudWatch Logs keeps a function's log (capture lines included)",
    "capture_retention_days": "days the capture bucket keeps a record",
}
DEFAULT_INIT_MS = 200.0  # docs/performance.md: imports + init at a full core, quiet machine


@dataclass(frozen=True)
class Measured:
    """What this machine measured for one model's function."""

    model: str
    memory_mb: int
    handler_ms: dict[int, float]  # warm handler p50 per rows a request, this machine
    request_bytes: dict[int, int]
    response_bytes: dict[int, int]
    init_ms: float  # a cold start's imports + module init at a full core
    init_source: str
    batch_rows_per_s: float | None  # the runner's, on this CPU; None: not measured
    # The share of requests captured (models.yaml `capture`, its AWS sampling; 0: off), and a
    # record's size per rows a request: its request's and answer's JSON (inputs and outputs,
    # as a record holds them; desensitised text is smaller, so an upper bound).
    capture_share: float = 0.0


@dataclass(frozen=True)
class Component:
    """One line of a bill: dollars per 1,000 predictions, and how they were reached."""

    name: str
    dollars: float
    how: str


def cpu_share(memory_mb: int, assumptions: Assumptions) -> float:
    """Lambda's share of one vCPU at `memory_mb` (capped at one: these models run one thread)."""
    return min(1.0, memory_mb / assumptions.full_vcpu_mb)


def lambda_ms(measured_ms: float, memory_mb: int, arch: str, assumptions: Assumptions) -> float:
    """The estimated duration on Lambda (ms) of what took `measured_ms` on this machine."""
    slowdown = assumptions.lambda_slowdown * (assumptions.arm_slowdown if arch == "arm64" else 1)
    return measured_ms * slowdown / cpu_share(memory_mb, assumptions)


def billed_s(ms: float) -> float:
    """Lambda bills duration in 1 ms steps, rounded up (seconds)."""
    return math.ceil(ms) / 1000


def snapstart_on(assumptions: Assumptions) -> bool:
    """The assumption if set, else the template's SnapStart parameter default (Disabled)."""
    if assumptions.snapstart is not None:
        return assumptions.snapstart
    from samtranslator.yaml_helper import yaml_parse

    template = yaml_parse((ROOT / "template.yaml").read_text())
    return bool(template["Parameters"]["SnapStart"]["Default"] == "Enabled")


def api_components(m: Measured, rows: int, arch: str, assumptions: Assumptions,
                   prices: Prices = PRICES) -> list[Component]:
    """The API's bill for 1,000 predictions at `rows` rows a request, on `arch`."""
    requests = PER / rows
    gb = m.memory_mb / 1024
    ms = lambda_ms(m.handler_ms[rows], m.memory_mb, arch, assumptions)
    gb_s = prices.lambda_gb_second[arch]
    colds = requests / assumptions.cold_every if assumptions.cold_every else 0.0
    snapstart = snapstart_on(assumptions)
    init_ms = lambda_ms(m.init_ms, m.memory_mb, arch, assumptions)
    parts = [
        Component("Lambda duration", requests * billed_s(ms) * gb * gb_s,
                  f"{requests:g} req x {math.ceil(ms)} ms billed ({ms:.2f} est.) x {gb:g} GB"),
        Component("Lambda init (cold starts)",
                  0.0 if snapstart else colds * billed_s(init_ms) * gb * gb_s,
                  "none: SnapStart restores instead" if snapstart else
                  f"{colds:g} cold starts x {math.ceil(init_ms)} ms x {gb:g} GB"),
        Component("Lambda requests", requests * prices.lambda_request, f"{requests:g} requests"),
        Component("API Gateway REST requests", requests * prices.api_rest_request,
                  f"{requests:g} requests"),
    ]
    if snapstart:
        cache_per_request = gb * MONTH_S * prices.snapstart_cache_gb_second \
            / assumptions.requests_per_month
        parts.append(Component(
            "SnapStart cache + restore",
            requests * cache_per_request + colds * gb * prices.snapstart_restore_gb,
            f"cache over {assumptions.requests_per_month:,} req/month, {colds:g} restores"))
    else:
        parts.append(Component("SnapStart cache + restore", 0.0,
                               "off (template parameter SnapStart defaults to Disabled)"))
    parts.append(capture_component(m, rows, assumptions, prices))
    return parts


def capture_component(m: Measured, rows: int, assumptions: Assumptions,
                      prices: Prices = PRICES) -> Component:
    """Data capture for 1,000 predictions at `rows` rows a request: each captured request's
    record (its request's and answer's bytes) ingested and kept by CloudWatch Logs, sent
    through Firehose (rounded up to 5 KB a record) and kept in S3 for its retention."""
    if not m.capture_share:
        return Component("data capture", 0.0, "off for this model (models.yaml capture)")
    records = PER / rows * m.capture_share
    record_gb = (m.request_bytes[rows] + m.response_bytes[rows]) / 1e9
    gb = records * record_gb
    per_gb = (prices.logs_ingest_gb
              + prices.logs_storage_gb_month * assumptions.log_retention_days / 30
              + prices.s3_storage_gb_month * assumptions.capture_retention_days / 30)
    firehose = records * max(record_gb, 5e3 / 1e9) * prices.firehose_gb
    return Component("data capture", gb * per_gb + firehose,
                     f"{records:g} records x {record_gb * 1e9:,.0f} B: logs, Firehose, S3")


def sagemaker_serverless(m: Measured, rows: int, assumptions: Assumptions,
                         prices: Prices = PRICES) -> list[Component]:
    """SageMaker Serverless Inference for the same 1,000 predictions: the same duration at the
    same memory (rounded up to its 1-6 GB sizes), billed per ms, and the data processed. Its
    cold starts are not counted (not billed as compute)."""
    requests = PER / rows
    gb = min(6, max(1, math.ceil(m.memory_mb / 1024)))
    ms = lambda_ms(m.handler_ms[rows], m.memory_mb, "x86_64", assumptions)
    data_gb = requests * (m.request_bytes[rows] + m.response_bytes[rows]) / 1e9
    return [Component("SageMaker Serverless duration",
                      requests * billed_s(ms) * gb * prices.sagemaker_serverless_gb_second,
                      f"{requests:g} req x {math.ceil(ms)} ms x {gb} GB"),
            Component("SageMaker data in + out", data_gb * prices.sagemaker_data_gb,
                      f"{data_gb * 1e6:.3g} MB")]


def batch_per_1000_rows(rows_per_s: float, assumptions: Assumptions,
                        prices: Prices = PRICES) -> dict[str, float]:
    """Dollars per 1,000 rows on the GPU instance: on demand and spot in all, and on demand
    split into the rows' instance-time (at the measured rows/s times the assumed GPU speed-up)
    and each job's start-up spread over its rows."""
    hour = prices.gpu_instance_hour[assumptions.gpu_instance]
    rows = PER / (rows_per_s * assumptions.gpu_speedup) / 3600 * hour
    start = assumptions.batch_start_s * PER / assumptions.batch_job_rows / 3600 * hour
    return {"on_demand": rows + start, "spot": (rows + start) * assumptions.spot_share,
            "on_demand_rows": rows, "on_demand_start": start}


def total(parts: list[Component]) -> float:
    return sum(part.dollars for part in parts)


# ---------------------------------------------------------------- measuring

def cold_init_ms() -> dict[str, float]:
    """Imports + module init (ms) per function from the cold section of `make bench`'s last
    results, where it ran."""
    if not RESULTS.is_file():
        return {}
    cold = json.loads(RESULTS.read_text()).get("cold") or []
    return {r["function"]: r["handler"]["imports"] + r["handler"]["init"] for r in cold}


def measure(assumptions: Assumptions, batch_rows: dict[str, int]) -> list[Measured]:
    """Warm handler timings and sizes at 1 and 32 rows, batch rows/s, per model."""
    from bench import batch, warm
    from model_registry import registry

    functions = [f for f in inference_functions() if f.model is not None]
    print(f"cost: timing the warm handler of {len(functions)} models ...", file=sys.stderr)
    with contextlib.redirect_stdout(sys.stderr):  # the handlers' metrics (EMF lines) are logs
        timed = warm.run(cases=[(rows, "json") for rows in REQUEST_ROWS], split=False)
    print("cost: timing the batch runner ...", file=sys.stderr)
    numeric = {f.model: count for f in functions if f.model is not None
               and (count := batch_rows.get(f.model, 0))}
    with contextlib.redirect_stdout(sys.stderr):  # the runner's metrics (EMF lines) are logs
        speeds = batch.runner_rows_per_s(numeric) if numeric else {}
    inits = cold_init_ms()
    captures = {entry.name: entry.capture_config for entry in registry.load()}
    found = []
    for function in functions:
        assert function.model is not None
        mine = {r["rows"]: r for r in timed if r["model"] == function.model}
        init, source = (assumptions.init_ms, "set") if assumptions.init_ms is not None else \
            (inits[function.name], "bench cold") if function.name in inits else \
            (DEFAULT_INIT_MS, "default")
        config = captures.get(function.model)
        found.append(Measured(
            model=function.model,
            memory_mb=assumptions.memory_mb or function.spec.memory_size,
            handler_ms={rows: mine[rows]["handler"]["p50_ms"] for rows in REQUEST_ROWS},
            request_bytes={rows: mine[rows]["request_bytes"] for rows in REQUEST_ROWS},
            response_bytes={rows: mine[rows]["response_bytes"] for rows in REQUEST_ROWS},
            init_ms=init, init_source=source,
            batch_rows_per_s=speeds.get(function.model),
            capture_share=config.sampling / 100 if config is not None and config.active
            else 0.0))
    return found


# ---------------------------------------------------------------- the table

def dollars(value: float) -> str:
    """Three significant digits, never an exponent: 0.00367, 0.0350, 1.25."""
    if value == 0:
        return "0"
    digits = max(0, 2 - math.floor(math.log10(abs(value))))
    return f"{value:.{digits}f}"


def model_table(m: Measured, assumptions: Assumptions) -> list[str]:
    """One model's bill: a column per (rows a request, architecture)."""
    columns = [(rows, arch) for rows in REQUEST_ROWS for arch in ARCHITECTURES]
    bills = {column: api_components(m, *column, assumptions) for column in columns}
    header = ["component", *(f"{rows} row{'s' if rows > 1 else ''} {arch}"
                             for rows, arch in columns)]
    lines = [f"{m.model}: {m.memory_mb} MB; warm handler here "
             + ", ".join(f"{m.handler_ms[rows]:.3g} ms at {rows} row{'s' if rows > 1 else ''}"
                         for rows in REQUEST_ROWS)
             + f"; init {m.init_ms:.0f} ms ({m.init_source}). On Lambda (x86_64) at "
             f"{m.memory_mb} MB a function has {cpu_share(m.memory_mb, assumptions):.2f} of a "
             f"vCPU (a full one at {assumptions.full_vcpu_mb} MB) and each time here is "
             f"{lambda_ms(1.0, m.memory_mb, 'x86_64', assumptions):.2f}x as long there (the "
             f"init billed {lambda_ms(m.init_ms, m.memory_mb, 'x86_64', assumptions):.0f} ms; "
             "durations rounded up to the ms)", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    names = [part.name for part in next(iter(bills.values()))]
    for index, name in enumerate(names):
        if all(bill[index].dollars == 0 for bill in bills.values()):
            continue  # a zero row says why, below
        lines.append(f"| {name} | " + " | ".join(dollars(bills[c][index].dollars)
                                                   for c in columns) + " |")
    lines += [f"| {part.name}: {part.how} | " + " | ".join("0" for _ in columns) + " |"
              for part in next(iter(bills.values())) if all(
                  bill[names.index(part.name)].dollars == 0 for bill in bills.values())]
    lines.append("| **API total** | " + " | ".join(f"**{dollars(total(bills[c]))}**"
                                                  for c in columns) + " |")
    sagemaker = {rows: total(sagemaker_serverless(m, rows, assumptions))
                 for rows in REQUEST_ROWS}
    lines.append("| SageMaker Serverless (duration + data) | "
                 + " | ".join(dollars(sagemaker[rows]) if arch == "x86_64" else "x86 only"
                              for rows, arch in columns) + " |")
    if m.batch_rows_per_s:
        batch = batch_per_1000_rows(m.batch_rows_per_s, assumptions)
        lines.append(f"\nbatch per 1,000 rows ({assumptions.gpu_instance}, "
                     f"{m.batch_rows_per_s:,.0f} rows/s measured x {assumptions.gpu_speedup:g}):"
                     f" spot ${dollars(batch['spot'])}, on demand ${dollars(batch['on_demand'])}"
                     f" (rows ${dollars(batch['on_demand_rows'])} + job start-up "
                     f"${dollars(batch['on_demand_start'])})")
    else:
        lines.append("\nbatch: not measured (make cost times the batch runner on .npy rows of "
                     "the seed models whose input is numeric, bench.batch.ROWS: not this one)")
    return lines


def summary_table(measured: list[Measured], assumptions: Assumptions) -> list[str]:
    """One line per model: the API's totals, SageMaker Serverless's, the batch path's."""
    columns = [(rows, arch) for rows in REQUEST_ROWS for arch in ARCHITECTURES]
    lines = ["| model | " + " | ".join(f"API {rows} row{'s' if rows > 1 else ''} {arch}"
                                      for rows, arch in columns)
             + " | SageMaker Serverless 1 / 32 rows | batch per 1,000 rows spot / on demand |",
             "|" + "---|" * (len(columns) + 3)]
    for m in measured:
        api = [dollars(total(api_components(m, *column, assumptions))) for column in columns]
        sagemaker = " / ".join(dollars(total(sagemaker_serverless(m, rows, assumptions)))
                               for rows in REQUEST_ROWS)
        batch = "not measured"
        if m.batch_rows_per_s:
            found = batch_per_1000_rows(m.batch_rows_per_s, assumptions)
            batch = f"{dollars(found['spot'])} / {dollars(found['on_demand'])}"
        lines.append(f"| {m.model} | " + " | ".join(api) + f" | {sagemaker} | {batch} |")
    return lines


def report(measured: list[Measured], assumptions: Assumptions, prices: Prices = PRICES) -> str:
    """The summary, every model's table, the assumptions and the prices with their sources."""
    lines = [f"US dollars per {PER:,} predictions (one row each), us-east-1; prices as of "
             f"{prices.as_of}: check them.", "", *summary_table(measured, assumptions), ""]
    for m in measured:
        lines += [*model_table(m, assumptions), ""]
    lines.append("assumptions (flags of python -m bench.cost): " + ", ".join(
        f"{f.name}={getattr(assumptions, f.name)}" for f in fields(assumptions)))
    lines.append(f"SnapStart {'on' if snapstart_on(assumptions) else 'off'}; "
                 "not counted: free tier, CloudWatch Logs but data capture's record lines (in "
                 "its row), X-Ray traces, data transfer out.")
    lines += [f"prices: {name}: {page}" for name, page in prices.sources.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = Assumptions()
    for f in fields(Assumptions):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "snapstart":
            parser.add_argument(flag, choices=("on", "off"), default=None,
                                help=ASSUMPTION_HELP[f.name])
            continue
        default = getattr(defaults, f.name)
        kind = {"memory_mb": int, "init_ms": float}.get(f.name, type(default))
        parser.add_argument(flag, type=kind, default=default,
                            help=ASSUMPTION_HELP[f.name]
                            + ("" if default is None else f" (default {default})"))
    parser.add_argument("--batch-rows", type=int, default=40_000,
                        help="rows per model timed through the batch runner (default 40000; "
                             "digits-cnn a sixth of it)")
    parser.add_argument("--quick", action="store_true",
                        help="a few rounds and rows (CI: proves it runs; the figures mean little)")
    parser.add_argument("--out", type=Path, default=COST_RESULTS,
                        help=f"the JSON results (default {COST_RESULTS.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    if args.quick:
        os.environ[QUICK_ENV] = "1"  # bench.warm's child processes inherit it
    if not BUILT_TEMPLATE.is_file():
        parser.error(f"{BUILT_TEMPLATE} is missing: run `make build` (make cost does)")
    values = {f.name: getattr(args, f.name) for f in fields(Assumptions)}
    if values["snapstart"] is not None:
        values["snapstart"] = values["snapstart"] == "on"
    assumptions = Assumptions(**values)
    if assumptions.gpu_instance not in PRICES.gpu_instance_hour:
        parser.error(f"--gpu-instance: one of {', '.join(PRICES.gpu_instance_hour)}")
    from bench.batch import QUICK_ROWS, ROWS

    batch_rows = {model: max(1, args.batch_rows * count // max(ROWS.values()))
                  for model, count in ROWS.items()}
    if args.quick:
        batch_rows = {model: min(count, QUICK_ROWS) for model, count in batch_rows.items()}
    measured = measure(assumptions, batch_rows)
    print(report(measured, assumptions))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "assumptions": asdict(assumptions), "prices": asdict(PRICES),
        "models": [{**asdict(m), "api": {f"{rows}/{arch}": {
            p.name: p.dollars for p in api_components(m, rows, arch, assumptions)}
            for rows in REQUEST_ROWS for arch in ARCHITECTURES}} for m in measured]},
        indent=1) + "\n")
    print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
