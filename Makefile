# Serverless model API: every workflow of the project. `make help` lists the targets.
# Each target builds what it needs first (venv, exported models, sam build).

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        := .venv
PY          := $(CURDIR)/$(VENV)/bin/python
PORT        ?= 3000
ARCH        ?= x86_64
FUNCTION    ?= BreastCancerMlpFunction
EVENT       ?= events/breast-cancer-mlp/infer.json
BUILT       := .aws-sam/build/template.yaml
# Says each set-up step and its time (tools/step.sh LABEL COMMAND...).
STEP        := $(CURDIR)/tools/step.sh

# Lambda runs python3.12: the venv and `sam build` use it too. Found on PATH or in pyenv.
PYTHON312   ?= $(firstword $(shell for p in python3.12 $(HOME)/.pyenv/versions/3.12*/bin/python3.12; do "$$p" -c '' 2>/dev/null && command -v "$$p"; done))

export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ARCH
export AWS_DEFAULT_REGION ?= us-east-1
export SAM_CLI_TELEMETRY := 0
export PYTHONDONTWRITEBYTECODE := 1

SOURCES     := $(shell find layers functions -type f -not -path '*/__pycache__/*' 2>/dev/null)
EXPORT_SRC  := $(shell find model_export model_registry -type f -not -path '*/__pycache__/*' 2>/dev/null)

.PHONY: port-free help setup models template events openapi check-generated add-model remove-model optimize build validate serve invoke invoke-local batch-local capture capture-erase monitor bench cost test lint deploy clean distclean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'
	@echo "  variables: PORT=$(PORT) ARCH=$(ARCH) FUNCTION=$(FUNCTION) EVENT=$(EVENT)"

# uv installs the requirements (tools/install.sh says why; pip when it cannot), at the version
# requirements-dev.txt pins.
UV_PIN      := $(shell grep -E '^uv==' requirements-dev.txt)

setup: $(VENV)/.installed ## Create the venv (python3.12) with everything the project needs

$(VENV)/.installed: requirements-dev.txt layers/runtime/requirements.txt model_export/requirements.txt pyproject.toml
	@test -n "$(PYTHON312)" || { echo "python3.12 not found: install it (Lambda's runtime) or set PYTHON312=/path/to/python3.12"; exit 1; }
	@test -x $(PY) || $(STEP) "creating $(VENV) with $(PYTHON312)" $(PYTHON312) -m venv $(VENV)
	@test -x $(VENV)/bin/uv || $(STEP) "installing $(UV_PIN) into $(VENV) (it installs the rest)" \
		$(PY) -m pip install --quiet --disable-pip-version-check $(UV_PIN)
	@$(STEP) "installing requirements-dev.txt into $(VENV) (serving, export, SAM CLI, tests)" \
		env UV=$(CURDIR)/$(VENV)/bin/uv $(CURDIR)/tools/install.sh $(PY) requirements-dev.txt
	@$(STEP) "installing this project (model_api and its tools) into $(VENV), editable" \
		$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

models: setup .venv-torch/.installed ## Train and export the models to build/models (skips the unchanged ones)
	@$(STEP) "training and exporting the models to build/models" $(PY) -m model_registry.export --out build/models
	@touch build/models/.exported

build/models/.exported: $(VENV)/.installed .venv-torch/.installed $(EXPORT_SRC) models.yaml
	@$(STEP) "training and exporting the models to build/models" $(PY) -m model_registry.export --out build/models
	@touch $@

# PyTorch (CPU wheel, cp311 only) trains digits-cnn in its own python3.11 venv, kept out of the
# main venv and the Lambda layers; model_export runs it there as a subprocess.
PYTHON311   ?= $(firstword $(shell for p in python3.11 $(HOME)/.pyenv/versions/3.11*/bin/python3.11; do "$$p" -c '' 2>/dev/null && command -v "$$p"; done))

.venv-torch: .venv-torch/.installed ## Create .venv-torch (python3.11 + CPU PyTorch) for digits-cnn

# --no-compile: torch's thousands of modules are not byte-compiled at install; the venv runs one
# export per model change, which compiles in memory only what it imports.
.venv-torch/.installed: model_export/requirements-torch.txt
	@test -n "$(PYTHON311)" || { echo "python3.11 not found (the torch CPU wheel is cp311): set PYTHON311=/path/to/python3.11"; exit 1; }
	@test -x .venv-torch/bin/python || $(STEP) "creating .venv-torch with $(PYTHON311)" $(PYTHON311) -m venv .venv-torch
	@$(STEP) "installing model_export/requirements-torch.txt into .venv-torch (CPU PyTorch)" \
		.venv-torch/bin/python -m pip install --quiet --disable-pip-version-check --no-compile \
		-r model_export/requirements-torch.txt
	@touch $@

# Generated files are whole files, committed, never edited by hand (.gitattributes lists them):
# template.yaml (from the hand-written template.src.yaml), stacks/, events/, docs/openapi.json.
template: setup ## Render template.yaml (from template.src.yaml) and stacks/ (one nested stack per group of models) from models.yaml and the route table
	$(PY) -m model_registry.template

events: build/models/.exported ## Write events/<function>/<route>.json (sam local generate-event + real bodies), remove stale ones
	$(PY) -m model_registry.events

openapi: build/models/.exported ## Write docs/openapi.json from the route table and the models
	$(PY) -m model_registry.openapi

check-generated: build/models/.exported ## Render every generated file again (template.yaml, stacks/, events/, docs/openapi.json): fail with a diff naming each that differs
	$(PY) -m model_registry.generated

# The seed models are exported first: add-model writes events and OpenAPI for every model. It
# checks everything before it writes anything; a refusal leaves the tree as it was.
add-model: setup build/models/.exported ## Serve an existing .onnx file: make add-model NAME=my-model ONNX=path [VERSION=2] [LABELS=a,b] [FEATURE_NAMES=x,y] [EXAMPLES=rows.npz] [BACKGROUND=rows.npy] [BASELINE=rows.npy] [CURRENT=1] [PLACE=layer|store] [SIZING=rows.npz] [OPTIMIZE=1 [ROWS=rows.npz]]
	@test -n "$(NAME)" -a -n "$(ONNX)" || { echo "usage: make add-model NAME=my-model ONNX=path/to/model.onnx [VERSION=2] [LABELS=a,b] [FEATURE_NAMES=x,y: a tabular input's column names] [EXAMPLES=rows.npz|rows.json] [BACKGROUND=rows.npy: training rows, for explanations of a tabular model] [BASELINE=rows.npy: training rows, for the monitoring baseline] [CURRENT=1] [PLACE=layer|store] [SIZING=rows.npz: a store version's sizing request] [OPTIMIZE=1 [ROWS=rows.npz]]"; exit 2; }
	$(PY) -m model_registry.add --name "$(NAME)" --onnx "$(ONNX)" $(if $(VERSION),--version "$(VERSION)") $(if $(LABELS),--labels "$(LABELS)") $(if $(FEATURE_NAMES),--feature-names "$(FEATURE_NAMES)") $(if $(EXAMPLES),--examples "$(EXAMPLES)") $(if $(BACKGROUND),--background "$(BACKGROUND)") $(if $(BASELINE),--baseline "$(BASELINE)") $(if $(CURRENT),--current) $(if $(PLACE),--place "$(PLACE)") $(if $(SIZING),--sizing "$(SIZING)")
	$(if $(OPTIMIZE),-$(OPTIMIZE_CMD) --model "$(NAME)" $(if $(VERSION),--version "$(VERSION)",--newest) $(if $(ROWS),--rows "$(ROWS)") $(if $(TASK),--task "$(TASK)"))

remove-model: setup build/models/.exported ## Stop serving a model or one version: make remove-model NAME=my-model [VERSION=2] [NEW_CURRENT=<version>]
	@test -n "$(NAME)" || { echo "usage: make remove-model NAME=my-model [VERSION=v] [NEW_CURRENT=v: the version that becomes current when VERSION is the current one]"; exit 2; }
	$(PY) -m model_registry.remove --name "$(NAME)" $(if $(VERSION),--version "$(VERSION)") $(if $(NEW_CURRENT),--current "$(NEW_CURRENT)")

# ---- optimisation (issue 15): candidates measured against their parent, the best passing one
# published as a new version (not current), through add-model (registry, template, events,
# OpenAPI in one atomic change).
OPTIMIZE_CMD = $(PY) -m model_registry.optimize
optimize: setup build/models/.exported ## Optimise a model, publish the best candidate that passes the gate: make optimize MODEL=<name> [VERSION=v] [ROWS=rows.npz] [TASK=classification|regression] [PASSES=7] [DRY_RUN=1]
	@test -n "$(MODEL)" || { echo "usage: make optimize MODEL=<name> [VERSION=v] [ROWS=rows.npz: an added model's rows, an array per input named as it, and \`targets\`] [TASK=classification|regression: a model added without LABELS] [DRY_RUN=1]"; exit 2; }
	$(OPTIMIZE_CMD) --model "$(MODEL)" $(if $(VERSION),--version "$(VERSION)") $(if $(ROWS),--rows "$(ROWS)") $(if $(TASK),--task "$(TASK)") $(if $(PASSES),--passes $(PASSES)) $(if $(DRY_RUN),--dry-run)

build: $(BUILT) ## sam build: layers (runtime, serving, one per model) and functions

# The console layer ships docs/openapi.json as GET /openapi.json.
$(BUILT): $(VENV)/.installed build/models/.exported template.yaml $(wildcard stacks/*.yaml) models.yaml docs/openapi.json $(SOURCES)
	@$(STEP) "sam build: the layers (runtime trimmed, serving, console, one per model) and the functions" \
		sam build --parameter-overrides Architecture=$(ARCH)
	@echo "    (sam's hints above: its \`sam local invoke\` needs Docker; \`make serve\` and \`make invoke-local\` run the same handlers without it)"
	@$(PY) -m model_registry.built || { rm -f $(BUILT); exit 1; }

validate: setup ## sam validate --lint (cfn-lint included) on template.yaml and every group's stack; with a build, every function's code + layers within Lambda's 250 MB unzipped
	sam validate --lint
	@for stack in stacks/models-*.yaml; do sam validate --lint --template "$$stack" || exit 1; done
	@if [ -f $(BUILT) ]; then $(PY) -m model_registry.built; fi

# Checked before the set-up (minutes on a fresh clone), so a port in use is said first.
port-free:
	@if (exec 3<>/dev/tcp/127.0.0.1/$(PORT)) 2>/dev/null; then echo "port $(PORT) is in use (another make serve?): stop what serves it, or pick another port: make serve PORT=$$(( $(PORT) + 1 ))"; exit 2; fi

serve: port-free build ## Serve every function of the template and its groups on http://127.0.0.1:PORT (3000) without Docker; the console at /, asynchronous jobs included (API_KEY=k to require x-api-key; ROOT_API=1: the root API alone, models through the server function; CAPTURE=0: no data capture)
	$(PY) -m local_api serve --port $(PORT) $(if $(API_KEY),--api-key "$(API_KEY)") $(if $(ROOT_API),--root-api) $(if $(CAPTURE),--capture "$(CAPTURE)")

# INVOKE_IMAGE=local/lambda-python3.12 runs on an image built here (tools/lambda_image.sh) when
# no registry can be reached: --invoke-image that image --skip-pull-image.
invoke: build ## sam local invoke FUNCTION with EVENT (needs Docker; INVOKE_IMAGE=local image)
	sam local invoke $(FUNCTION) --event $(EVENT) $(if $(INVOKE_IMAGE),--invoke-image $(INVOKE_IMAGE) --skip-pull-image)

invoke-local: build ## Run FUNCTION on EVENT without Docker, as sam local invoke would
	$(PY) -m local_api invoke $(FUNCTION) --event $(EVENT)

# ---- data capture (issue 22): what the models saw and answered (README, "Monitoring").
capture: setup ## Print a model's captured records as JSON Lines: make capture MODEL=<m> [SINCE=<ISO 8601>] [UNTIL=..] [BUCKET=<CaptureBucketName output>: the deployed store]
	@test -n "$(MODEL)" || { echo "usage: make capture MODEL=<name> [SINCE=<ISO 8601 time>] [UNTIL=<ISO 8601 time>] [BUCKET=<deployed capture bucket>]"; exit 2; }
	@$(PY) -m model_api.aws.capture read --model "$(MODEL)" $(if $(SINCE),--since "$(SINCE)") $(if $(UNTIL),--until "$(UNTIL)") $(if $(BUCKET),--bucket "$(BUCKET)")

capture-erase: setup ## Erase a model's captured records, every version: make capture-erase MODEL=<m> [SINCE=..] [UNTIL=..] [BUCKET=..]
	@test -n "$(MODEL)" || { echo "usage: make capture-erase MODEL=<name> [SINCE=<ISO 8601 time>] [UNTIL=<ISO 8601 time>] [BUCKET=<deployed capture bucket>]"; exit 2; }
	@$(PY) -m model_api.aws.capture erase --model "$(MODEL)" $(if $(SINCE),--since "$(SINCE)") $(if $(UNTIL),--until "$(UNTIL)") $(if $(BUCKET),--bucket "$(BUCKET)")

monitor: setup ## Drift report of a model's captured window against its baseline (README "Monitoring"): make monitor MODEL=<m> [VERSION=] [SINCE=<ISO 8601>] [UNTIL=..] [JSON=1: the whole report]
	@test -n "$(MODEL)" || { echo "usage: make monitor MODEL=<name> [VERSION=<v>] [SINCE=<ISO 8601 time; default a day ago>] [UNTIL=<ISO 8601 time; default now>] [JSON=1: the whole report as JSON]"; exit 2; }
	@$(PY) -m model_api.monitoring.reports --model "$(MODEL)" $(if $(VERSION),--version "$(VERSION)") $(if $(SINCE),--since "$(SINCE)") $(if $(UNTIL),--until "$(UNTIL)") $(if $(JSON),--json)

# ---- batch (issue 4): the event-driven GPU batch loop, run locally over a moto server.
# BatchLayer is built from batch/, so its sources count for `sam build` too.
BATCH_SRC   := $(shell find batch -type f -not -path '*/__pycache__/*' 2>/dev/null)
$(BUILT): $(BATCH_SRC)

batch-local: build ## Batch job locally: make batch-local MODEL=breast-cancer-mlp INPUT=rows.jsonl|.npy OUTPUT=out.jsonl [VERSION=v] [KILL_AFTER_ROWS=N [KILL_ATTEMPTS=K]] [SHARDS=N [KILL_SHARD=I]]
	@test -n "$(MODEL)" -a -n "$(INPUT)" -a -n "$(OUTPUT)" || { echo "usage: make batch-local MODEL=<name> INPUT=<file.jsonl|file.npy> OUTPUT=<file> [VERSION=v: that version, not the current one] [KILL_AFTER_ROWS=N: SIGKILL the runner at N rows, then resume] [KILL_ATTEMPTS=K: the first K attempts] [SHARDS=N: an array job of N children] [KILL_SHARD=I: the child KILL_AFTER_ROWS kills, default 0]"; exit 2; }
	$(PY) -m local_api.batch.loop --model "$(MODEL)" --input "$(INPUT)" --output "$(OUTPUT)" $(if $(VERSION),--version "$(VERSION)") $(if $(KILL_AFTER_ROWS),--kill-after-rows "$(KILL_AFTER_ROWS)") $(if $(KILL_ATTEMPTS),--kill-attempts "$(KILL_ATTEMPTS)") $(if $(SHARDS),--shards "$(SHARDS)") $(if $(KILL_SHARD),--kill-shard "$(KILL_SHARD)")

# ---- performance (issue 6): the served path against onnxruntime called directly, in one run.
bench: build ## Benchmarks vs raw onnxruntime (warm, http, cold, size, batch) and scale (many models): table + bench-results/latest.json [ONLY=warm,scale] [QUICK=1: a few rounds of each, CI's pass]
	$(PY) -m bench $(if $(ONLY),--only "$(ONLY)") $(if $(QUICK),--quick)

# ---- cost (issue 24): dollars per 1,000 predictions, from durations measured here.
cost: build ## Dollars per 1,000 predictions per model: API (1 and 32 rows, x86_64/arm64, every component), SageMaker Serverless, batch on GPU [COST_ARGS="--memory-mb 512 --cold-every 100 ...": the assumptions, see python -m bench.cost --help]
	$(PY) -m bench.cost $(COST_ARGS)

lint: setup ## ruff, mypy, and every generated file up to date (make check-generated)
	ruff check .
	mypy layers/serving/python/model_api local_api model_export model_registry batch bench
	@$(MAKE) --no-print-directory check-generated

# --durations: the slowest tests, so that the time of `make test` can be watched. The suite runs
# on TEST_WORKERS processes (pytest-xdist), each test file whole on one worker (its module and
# session fixtures once per worker); tests marked `serial` (they compare speeds, so they must not
# share the cores) run alone afterwards.
TEST_WORKERS ?= 2
test: build lint ## Everything: lint, unit, handler, template, security, local API, batch and end-to-end tests [TEST_WORKERS=2]
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not serial" --durations=15
	$(PY) -m pytest -m serial --durations=5 || test $$? -eq 5  # 5: no test is marked serial

.PHONY: security
security: build ## Security tests only: checkov on the deployed template, hostile requests, fuzzing
	$(PY) -m pytest tests/security tests/hostile

# The model groups are nested stacks with transforms: CloudFormation needs CAPABILITY_AUTO_EXPAND.
DEPLOY_CAPABILITIES := --capabilities CAPABILITY_IAM CAPABILITY_AUTO_EXPAND

# Large models (model_registry/placement.py): the model store is filled before `sam deploy`
# (new objects only: what is deployed still reads the old ones) and cleaned after it.
deploy: build ## sam deploy (guided the first time, then from samconfig.toml); fills the model store with the large models
	$(PY) -m model_registry.store --keep
	@if grep -q '^\[default.deploy' samconfig.toml; then sam deploy $(DEPLOY_CAPABILITIES); else sam deploy --guided $(DEPLOY_CAPABILITIES); fi
	$(PY) -m model_registry.store

clean: ## Remove build outputs (keeps the venvs)
	rm -rf .aws-sam build .pytest_cache .ruff_cache .mypy_cache

distclean: clean ## Remove build outputs and the venvs
	rm -rf $(VENV) .venv-torch
