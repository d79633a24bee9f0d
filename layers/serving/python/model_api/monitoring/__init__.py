"""Model monitoring: a baseline that travels with each model version, and drift reports that
compare a window of captured records (model_api.capture) with it (README "Monitoring").

    features.py   the features monitored per input (tabular columns, text length and tokens,
                  image regions) and the prediction, from raw rows and from captured records
    baseline.py   the baseline (quantile bins, category counts) written at export and
                  add-model beside the manifest, read back after its sha256 check
    drift.py      the statistics (PSI, normalised Wasserstein, Jensen-Shannon) and the report
    reports.py    where reports are kept (monitoring/<model>/latest.json) and `make monitor`

numpy only: no scipy in the runtime layer. No AWS here: the scheduled function is
model_api/aws/monitor.py.
"""
