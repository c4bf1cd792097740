"""Distinctive words of a group of titles against the whole catalogue (pure Python).

A word's score in a group is ``p_in * log(p_in / p_all)``: ``p_in`` the share of the group's
titles that contain it, ``p_all`` the share of all titles that do (the word's contribution to
the KL divergence of the group from the catalogue, a TF-IDF on document frequencies). Words
every title shares score ~0; words only one member has are skipped in groups of 3 or more.
"""

from __future__ import annotations

import html
import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

__all__ = ["tokenize", "TermStats", "top_terms"]

_WORD = re.compile(r"[^\W\d_]{3,}")
STOPWORDS = frozenset({
    "and", "the", "for", "with", "from", "into", "that", "this", "are", "was", "were",
    "you", "your", "our", "not", "but", "all", "any", "per", "its", "one", "two", "three",
    "four", "five", "six", "has", "have", "had", "can", "will", "may", "use", "each",
    "also", "only", "more", "most", "less", "very", "than", "then", "they", "them",
    "their", "there", "these", "those", "which", "what", "when", "who", "how"})


def tokenize(text: str) -> set[str]:
    """Lower-cased words of three or more letters, without common function words (HTML
    entities such as ``&amp;`` are decoded first, so they are not words)."""
    return {w for w in _WORD.findall(html.unescape(text).lower()) if w not in STOPWORDS}


class TermStats:
    """Document frequencies of the catalogue's titles (each title counts a word once). The
    titles are kept by reference and tokenized again per group, so memory holds the counts,
    not a word set per item."""

    def __init__(self, texts: Sequence[str]) -> None:
        self.texts = texts
        self.df: Counter[str] = Counter()
        for t in texts:
            self.df.update(tokenize(t))
        self.n = max(len(texts), 1)

    def top(self, members: Sequence[int] | np.ndarray, n: int) -> list[str]:
        """The ``n`` most distinctive words of the titles at rows ``members``."""
        if n <= 0:
            return []
        return top_terms([tokenize(self.texts[i]) for i in members], self.df, self.n, n)


def top_terms(group: Sequence[set[str]], df: Counter[str], n_docs: int, n: int) -> list[str]:
    if not group or n <= 0:
        return []
    counts: Counter[str] = Counter()
    for words in group:
        counts.update(words)
    min_count = 2 if len(group) >= 3 else 1
    scored = []
    for word, c in counts.items():
        if c < min_count:
            continue
        p_in, p_all = c / len(group), max(df[word], c) / n_docs
        score = p_in * math.log(p_in / p_all)
        if score > 0:
            scored.append((-score, word))
    return [w for _, w in sorted(scored)[:n]]
