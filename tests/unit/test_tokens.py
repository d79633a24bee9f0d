"""model_api.tokens: a tokenizer's pattern, rewritten to be fast, finds exactly the same tokens
as the pattern itself (random texts over the whole Unicode range, astral planes included), and
any pattern it cannot rewrite is compiled as it is."""

from __future__ import annotations

import random
import re

import pytest
from model_api.tokens import compile_token_pattern

from model_export.text import UNICODE_TEXTS, word_tokens

# A few ranges beyond U+FFFF, one across the boundary, single characters, a bounded repeat
PATTERNS = [word_tokens(), "[a-z\U0001f600-\U0001f64f]+", "[\ufff0-\U00010010x]{1,3}",
            "[0-9\U00020000]*"]


def texts(rng: random.Random, count: int) -> list[str]:
    """Texts of word and other characters from every plane, and the project's own samples."""
    alphabet = [" ", ",", "-", "a", "Z", "_", "7", "é", "ß", "中", "ѐ", "\u0301", "\ufff5",
                "\U00010000", "\U0001f600", "\U0001d400", "\U00020001", "\U000e0100"]
    found = list(UNICODE_TEXTS)
    for _ in range(count):
        found.append("".join(rng.choice(alphabet) if rng.random() < 0.7 else
                             chr(rng.randrange(0x20, 0x10FFFF)) for _ in range(rng.randrange(40))))
    return [text for text in found if not any(0xD800 <= ord(c) <= 0xDFFF for c in text)]


@pytest.mark.parametrize("pattern", PATTERNS, ids=["word_tokens", "emoji", "boundary", "star"])
def test_the_rewritten_pattern_finds_the_same_tokens(pattern: str) -> None:
    fast, plain = compile_token_pattern(pattern), re.compile(pattern)
    assert fast.pattern != plain.pattern  # rewritten: each has ranges beyond U+FFFF
    for text in texts(random.Random(20261206), 3000):
        assert fast.findall(text) == plain.findall(text), text


def test_other_patterns_are_compiled_as_they_are() -> None:
    for pattern in [r"\w+", "[a-z]+", "[^a-z\U00010000]+", r"[\w\U00010000]+", "[a-z-]+",
                    "x[a-z\U00010000]+", r"(?u)\b\w\w+\b"]:
        assert compile_token_pattern(pattern).pattern == pattern
    for broken in ["[a-", "[z-a\U00010000]+"]:  # re.compile's own error
        with pytest.raises(re.error):
            compile_token_pattern(broken)
