"""CPU-class components (routed ``/python/...``): text processing in plain Python.

``tokenize`` splits a text into words and sentences, ``keywords`` ranks the words that are not
stopwords by term frequency, ``slugify`` makes a URL-safe name, and ``summarize`` picks the
sentences whose words are most frequent in the whole text (extractive summary).

The components are plain ``def`` functions: the SDK runs them in worker threads, so a long
text does not hold up the server's event loop. Serve with::

    stepflow-stream serve-components examples.components.cpu_server:server --port 8101
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from typing import Annotated

import msgspec

from stepflow_stream.sdk import ComponentServer

server = ComponentServer("cpu", max_concurrency=8)

Positive = Annotated[int, msgspec.Meta(ge=1)]

# Words keep inner apostrophes ("don't", also typographic); digits count, underscores do not.
_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")
# A sentence ends at . ! or ? (or one closing quote or bracket after it) and whitespace.
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"'\u201d\u2019)\]]))\s+")

STOPWORDS = frozenset(
    [
        "a", "about", "above", "after", "again", "against", "all", "also", "am", "an", "and",
        "any", "are", "as", "at", "be", "because", "been", "before", "being", "below", "between",
        "both", "but", "by", "can", "could", "did", "do", "does", "doing", "down", "during",
        "each", "few", "for", "from", "further", "had", "has", "have", "having", "he", "her",
        "here", "hers", "herself", "him", "himself", "his", "how", "however", "i", "if", "in",
        "into", "is", "it", "its", "itself", "just", "me", "more", "most", "my", "myself", "no",
        "nor", "not", "now", "of", "off", "on", "once", "only", "or", "other", "our", "ours",
        "ourselves", "out", "over", "own", "same", "she", "should", "so", "some", "such", "than",
        "that", "the", "their", "theirs", "them", "themselves", "then", "there", "these", "they",
        "this", "those", "through", "to", "too", "under", "until", "up", "us", "very", "was", "we",
        "were", "what", "when", "where", "which", "while", "who", "whom", "why", "will", "with",
        "would", "you", "your", "yours", "yourself", "yourselves", "one", "two", "many", "much",
        "may", "might", "must", "shall", "yet", "isn't", "aren't", "wasn't", "weren't", "don't",
        "doesn't", "didn't", "can't", "couldn't", "won't", "wouldn't", "shouldn't", "it's", "i'm",
        "you're", "we're", "they're", "that's", "there's", "let's", "i've", "you've", "we've",
        "they've", "i'll", "you'll", "we'll", "they'll", "i'd", "you'd", "he's", "she's",
    ]
)
"""English function words, left out of keywords and of summary scores."""


# Pure text functions ------------------------------------------------------------------------


def words(text: str) -> list[str]:
    """The words of ``text``, lowercased, in order."""
    return [match.group().lower().replace("\u2019", "'") for match in _WORD.finditer(text)]


def sentences(text: str) -> list[str]:
    """The sentences of ``text``, whitespace collapsed, in order."""
    flat = " ".join(text.split())
    return [part.strip() for part in _SENTENCE_END.split(flat) if part.strip()]


def content_words(
    tokens: list[str], min_length: int = 1, extra_stopwords: frozenset[str] = frozenset()
) -> list[str]:
    """``tokens`` less stopwords, numbers and words shorter than ``min_length``."""
    return [
        token
        for token in tokens
        if len(token) >= min_length
        and not token.isdigit()
        and token not in STOPWORDS
        and token not in extra_stopwords
    ]


def slug(text: str, max_length: int = 80, separator: str = "-") -> str:
    """``text`` as lowercase ASCII letters and digits joined by ``separator``, cut at a
    separator so that it is at most ``max_length`` long."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    parts = re.findall(r"[a-z0-9]+", ascii_text.lower())
    result = ""
    for part in parts:
        candidate = f"{result}{separator}{part}" if result else part
        if len(candidate) > max_length:
            return result or part[:max_length]
        result = candidate
    return result


# Components ---------------------------------------------------------------------------------


class TextInput(msgspec.Struct, forbid_unknown_fields=True):
    text: str


class TokenCounts(msgspec.Struct):
    characters: int
    words: int
    unique_words: int
    sentences: int


class Tokens(msgspec.Struct):
    words: list[str]
    sentences: list[str]
    counts: TokenCounts


@server.component(name="tokenize")
def tokenize(input: TextInput) -> Tokens:
    """Split a text into lowercased words and sentences, with counts."""
    tokens = words(input.text)
    parts = sentences(input.text)
    counts = TokenCounts(
        characters=len(input.text),
        words=len(tokens),
        unique_words=len(set(tokens)),
        sentences=len(parts),
    )
    return Tokens(words=tokens, sentences=parts, counts=counts)


class KeywordsInput(msgspec.Struct, forbid_unknown_fields=True):
    text: str
    top_k: Positive = 10
    min_length: Positive = 3
    stopwords: list[str] = []
    """Words to leave out besides the built-in English stopwords."""


class Keyword(msgspec.Struct):
    word: str
    count: int
    score: float
    """Term frequency: the word's share of all content words, rounded to 4 places."""


class Keywords(msgspec.Struct):
    keywords: list[Keyword]
    content_words: int


@server.component(name="keywords")
def keywords(input: KeywordsInput) -> Keywords:
    """The ``top_k`` most frequent words that are not stopwords (ties: first seen first)."""
    extra = frozenset(word.lower() for word in input.stopwords)
    kept = content_words(words(input.text), input.min_length, extra)
    counts = Counter(kept)  # insertion order is first occurrence, and sorting is stable
    ranked = sorted(counts.items(), key=lambda item: -item[1])[: input.top_k]
    total = len(kept)
    return Keywords(
        keywords=[Keyword(word, count, round(count / total, 4)) for word, count in ranked],
        content_words=total,
    )


class SlugInput(msgspec.Struct, forbid_unknown_fields=True):
    text: str
    max_length: Positive = 80
    separator: str = "-"


class Slug(msgspec.Struct):
    slug: str


@server.component(name="slugify")
def slugify(input: SlugInput) -> Slug:
    """A URL-safe slug: accents dropped, lowercase, words joined by ``separator``."""
    return Slug(slug(input.text, input.max_length, input.separator))


class SummarizeInput(msgspec.Struct, forbid_unknown_fields=True):
    text: str
    sentences: Positive = 3


class Summary(msgspec.Struct):
    summary: str
    sentences: list[str]
    indices: list[int]
    """Positions of the chosen sentences in the text, in order."""
    total_sentences: int


@server.component(name="summarize")
def summarize(input: SummarizeInput) -> Summary:
    """Extractive summary: the sentences with the highest mean word weight, in text order.

    A word's weight is its count over the count of the most frequent content word; a
    sentence's score is the sum of its content words' weights over its length in words."""
    parts = sentences(input.text)
    counts = Counter(content_words(words(input.text)))
    top = max(counts.values(), default=1)

    def score(sentence: str) -> float:
        tokens = words(sentence)
        weight = sum(counts[token] for token in content_words(tokens)) / top
        return weight / len(tokens) if tokens else 0.0

    ranked = sorted(range(len(parts)), key=lambda index: -score(parts[index]))
    chosen = sorted(ranked[: input.sentences])
    picked = [parts[index] for index in chosen]
    return Summary(
        summary=" ".join(picked), sentences=picked, indices=chosen, total_sentences=len(parts)
    )
