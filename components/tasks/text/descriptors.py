"""Per-text descriptors for drift: length, out-of-vocabulary share and non-letter share.

Drift compares these numbers between a reference sample (the training data) and current data
(the test split, or production traffic); ``TextClassification.descriptors`` is where the spine
finds them.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pandas as pd

DESCRIPTORS = ("text_length", "oov_share", "non_letter_share")
_WORD = re.compile(r"[^\W\d_]+")


def text_descriptors(texts: pd.Series, reference_vocabulary: pd.Series | None) -> pd.DataFrame:
    """Per-text length (characters), out-of-vocabulary share and non-letter share.

    The vocabulary is the set of words in ``reference_vocabulary``'s texts. With None, ``texts`` are
    the reference themselves and each text is scored leave-one-out (a word is out of vocabulary
    when no *other* reference text has it), so reference and current are scored alike.
    """
    strings = texts.astype(str).tolist()
    words = [_WORD.findall(text.lower()) for text in strings]
    if reference_vocabulary is None:
        document_frequency = Counter(word for text_words in words for word in set(text_words))
        oov = [_share(sum(document_frequency[w] <= 1 for w in text_words), len(text_words)) for text_words in words]
    else:
        vocabulary = {w for text in reference_vocabulary.astype(str) for w in _WORD.findall(text.lower())}
        oov = [_share(sum(w not in vocabulary for w in text_words), len(text_words)) for text_words in words]
    non_space = [re.sub(r"\s", "", text) for text in strings]
    non_letter = [_share(sum(not ch.isalpha() for ch in chars), len(chars)) for chars in non_space]
    return pd.DataFrame({
        "text_length": np.array([len(text) for text in strings], dtype=float),
        "oov_share": np.array(oov, dtype=float),
        "non_letter_share": np.array(non_letter, dtype=float),
    })


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0
