"""bench.cold.import_groups: where a cold start's import milliseconds go, by package."""

from __future__ import annotations

from bench.cold import import_groups

# `python -X importtime`'s report: each module after what it imported, one level deeper.
REPORT = """\
import time: self [us] | cumulative | imported package
import time:      1000 |       1000 |       _asyncio
import time:      2000 |       3000 |     asyncio
import time:       500 |       3500 |   wrapt
import time:       250 |       3750 | aws_xray_sdk.core
import time:      4000 |       4000 |   logging
import time:       300 |       4300 | aws_lambda_powertools.logging
import time:      7000 |       7000 |     numpy._core
import time:      1000 |       8000 |   numpy
import time:       600 |       8600 | model_api.codec
import time:       100 |        100 | json
"""


def test_each_module_counts_toward_the_innermost_group_it_was_imported_under() -> None:
    # Given the report above, when it is grouped:
    groups = import_groups(REPORT)
    # Then asyncio counts as X-Ray's (wrapt imported it), logging as Powertools', numpy as numpy
    # even under model_api, and json, imported by nothing grouped, as "other".
    assert groups == {"xray": 3.75, "powertools": 4.3, "numpy": 8.0, "model_api": 0.6,
                      "other": 0.1}
