"""The request parser's cost against the standard library's (issue 24: JSON decoding).

`python -m bench.parse` times `model_api.codec.parse_json` (orjson, keys checked against the
text's skeleton) and `parse_json_strictly` (the standard library with the codec's hooks, what it
parsed with before and falls back to) on the same Open Inference Protocol bodies, in turns, best
of 5 rounds: random float rows the shape of the seed models' inputs at 1, 32 and 1,024 rows.
"""

from __future__ import annotations

import argparse
import json
import timeit
from collections.abc import Callable

import numpy as np
from model_api.codec import parse_json, parse_json_strictly

# (name, rows, features): breast-cancer-mlp's 30 features, diabetes-linear's 10, digits-cnn's
# 8 x 8 pixels.
SHAPES = [("1 x 30", 1, 30), ("32 x 64", 32, 64), ("1,024 x 10", 1024, 10),
          ("1,024 x 30", 1024, 30), ("1,024 x 64", 1024, 64)]


def body(rows: int, features: int, seed: int = 0) -> bytes:
    """A JSON request of `rows` x `features` FP32 values (4 decimals, 0..16), nested by row."""
    data = (np.random.default_rng(seed).random((rows, features)) * 16).round(4).tolist()
    return json.dumps({"inputs": [{"name": "x", "shape": [rows, features],
                                   "datatype": "FP32", "data": data}]}).encode()


def best_ms(parse: Callable[[bytes], object], text: bytes, number: int, rounds: int) -> float:
    """The best of `rounds` mean times of `number` parses of `text`, in milliseconds."""
    return min(timeit.repeat(lambda: parse(text), number=number, repeat=rounds)) / number * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"{'rows x values':>14} {'bytes':>8} {'stdlib ms':>10} {'codec ms':>9} {'speed-up':>9}")
    for name, rows, features in SHAPES:
        text = body(rows, features)
        assert parse_json(text) == parse_json_strictly(text)
        number = max(20, 2000 // rows)
        strict = best_ms(parse_json_strictly, text, number, args.rounds)
        fast = best_ms(parse_json, text, number, args.rounds)
        print(f"{name:>14} {len(text):>8} {strict:>10.3f} {fast:>9.3f} {strict / fast:>8.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
