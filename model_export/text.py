# ruff: noqa: RUF001  (UNICODE_TEXTS: other scripts' look-alike letters and digits, on purpose)
"""Text in an ONNX graph as scikit-learn sees it: the word tokens, and the texts parity checks use.

scikit-learn's vectorizers find words with `token_pattern` `(?u)\\b\\w\\w+\\b` (Python's `re`, so
`\\w` is any Unicode letter, digit or `_`, per the running Python's Unicode database).
skl2onnx turns that default into `[a-zA-Z0-9_]+` for onnxruntime's Tokenizer (RE2), which
splits every word with an accent, `ß` or a non-Latin script differently from the pipeline
(training-serving skew). `word_tokens()` is the pattern to give the converter instead
(`options={id(vectorizer): {"tokenexp": word_tokens()}}`): the very set of code points
Python's `\\w` matches, written out as RE2 ranges, two or more of them in a row; a test runs
every code point through onnxruntime's Tokenizer with it and through scikit-learn.

The one difference left is lower-casing: onnxruntime's StringNormalizer lowers `İ` (U+0130)
to `i` where Python's `str.lower` gives `i̇` (`i` and U+0307, a combining dot that is no word
character, so Python splits the word there). `LOWERCASE_DIFFERENCES` lists it; the test
enforces that it is the only one.

`UNICODE_TEXTS` are texts beyond ASCII (accents, German, Chinese, Greek, Cyrillic, Arabic,
emoji, decomposed accents, stop words alone, empty text) that a text model's parity check adds
to its held-back rows.
"""

from __future__ import annotations

import re
import sys

# scikit-learn's default token_pattern (CountVectorizer, TfidfVectorizer).
SKLEARN_TOKEN_PATTERN = r"(?u)\b\w\w+\b"

# Characters whose lower case differs between Python's str.lower (scikit-learn) and
# onnxruntime's StringNormalizer (C.UTF-8 locale): {character: (python's, onnxruntime's)}.
LOWERCASE_DIFFERENCES = {"\u0130": ("i\u0307", "i")}

UNICODE_TEXTS = (
    "Le café était délicieux, la crème brûlée aussi",
    "Über das Fußballspiel: Straße, größer, Grüße",
    "FUSSBALL und Fußball im Stadion",
    "今天的足球比赛很精彩 天气预报说明天下雨",
    "今天的football比赛很精彩, rain天气 and 烤chicken",
    "Ο καιρός σήμερα είναι βροχερός",
    "Погода сегодня: дождь и ветер",
    "الطقس اليوم ممطر",
    "football ⚽ match 🏟️ goal 🎉🎉",
    "rain 🌧️🌧️ forecast ☀️ sunny",
    "cafe\u0301 cre\u0300me (decomposed accents) ÉCOLE DE FOOTBALL",
    "naïve coöperation façade résumé",
    "python_code x86_64 ２０２４ ①②③ ½",
    "the",
    "and of the",
    "",
    "   ",
)


def _word_ranges(maximum: int = sys.maxunicode) -> list[tuple[int, int]]:
    """The code points Python's `re` `\\w` matches, as inclusive ranges."""
    word = re.compile(r"\w")
    ranges: list[tuple[int, int]] = []
    start = None
    for point in range(maximum + 2):
        matches = (point <= maximum and not 0xD800 <= point <= 0xDFFF
                   and word.match(chr(point)) is not None)
        if matches and start is None:
            start = point
        elif not matches and start is not None:
            ranges.append((start, point - 1))
            start = None
    return ranges


def word_tokens() -> str:
    """A pattern that finds exactly the tokens of scikit-learn's default `(?u)\\b\\w\\w+\\b`:
    runs of two or more of the code points that this Python's `\\w` matches (its Unicode
    database, `unicodedata.unidata_version`), as literal ranges in one character class. Both
    RE2 (onnxruntime's Tokenizer `tokenexp`) and Python's `re` (the token-ablation explainer
    reads it from the graph) read it alike; no word character needs escaping in a class."""
    parts = [chr(a) if a == b else f"{chr(a)}-{chr(b)}" for a, b in _word_ranges()]
    return f"[{''.join(parts)}]{{2,}}"
