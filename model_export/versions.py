"""Framework versions recorded in manifests and fingerprints, and the ONNX opset we target."""

from __future__ import annotations

from importlib.metadata import version

# Opset 18 is read by onnxruntime 1.32 and by the onnx checker; pinned so a converter upgrade
# cannot silently change the graphs.
TARGET_OPSET = 18

SKLEARN_FRAMEWORKS = {package: version(package)
                      for package in ("scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy")}
