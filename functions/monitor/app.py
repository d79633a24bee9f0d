"""Lambda entry point of MonitorFunction: once a day (EventBridge Scheduler), every model's
drift report of the last day's captured records against its baseline (model_api.aws.monitor),
written to the capture bucket's monitoring/<model>/, with DriftedFeatures per model."""

from model_api.aws.monitor import lambda_handler

__all__ = ["lambda_handler"]
