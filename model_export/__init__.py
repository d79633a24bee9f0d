"""Offline training and export of the seed models to ONNX + manifest (`python -m model_export`).

Manifests are validated with the serving library itself (a Lambda layer, not an installed
package), so its folder is put on the import path here, as the tests' pythonpath does.
"""

import sys
from pathlib import Path

SERVING_LIBRARY = Path(__file__).resolve().parent.parent / "layers" / "serving" / "python"
if str(SERVING_LIBRARY) not in sys.path:
    sys.path.append(str(SERVING_LIBRARY))
