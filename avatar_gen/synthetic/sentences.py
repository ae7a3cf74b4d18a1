"""Random, grammatical English sentences from a small word list and a seeded RNG (for TTS input)."""

from __future__ import annotations

import numpy as np

ADJECTIVES = (
    "quiet", "bright", "small", "old", "green", "busy", "gentle", "cold", "happy", "tall", "clever", "heavy",
    "yellow", "distant", "friendly", "sudden", "warm", "narrow", "curious", "simple", "golden", "careful",
)
NOUNS = (
    "teacher", "garden", "river", "window", "doctor", "village", "engine", "letter", "market", "painter",
    "mountain", "kitchen", "student", "bridge", "morning", "captain", "library", "neighbour", "forest", "farmer",
    "station", "picture", "machine", "sister", "evening", "island", "traveller", "musician", "harbour", "camera",
)
VERBS = (
    "watches", "finds", "carries", "paints", "follows", "visits", "opens", "builds", "remembers", "cleans",
    "describes", "answers", "moves", "reads", "explains", "measures", "collects", "reaches", "closes", "repairs",
)
PREPOSITIONS = ("near", "behind", "beside", "under", "above", "across", "inside", "around", "before", "after")
ADVERBS = ("slowly", "today", "again", "quickly", "carefully", "every day", "at night", "once more", "later")
CONNECTIVES = ("and then", "while", "because", "but", "so")


def _noun_phrase(rng: np.random.Generator) -> str:
    article = "the" if rng.random() < 0.7 else "a"
    if rng.random() < 0.6:
        adjective = ADJECTIVES[rng.integers(len(ADJECTIVES))]
        if article == "a" and adjective[0] in "aeiou":
            article = "an"
        return f"{article} {adjective} {NOUNS[rng.integers(len(NOUNS))]}"
    noun = NOUNS[rng.integers(len(NOUNS))]
    if article == "a" and noun[0] in "aeiou":
        article = "an"
    return f"{article} {noun}"


def _clause(rng: np.random.Generator) -> str:
    parts = [_noun_phrase(rng), VERBS[rng.integers(len(VERBS))], _noun_phrase(rng)]
    if rng.random() < 0.5:
        parts += [PREPOSITIONS[rng.integers(len(PREPOSITIONS))], _noun_phrase(rng)]
    if rng.random() < 0.3:
        parts.append(ADVERBS[rng.integers(len(ADVERBS))])
    return " ".join(parts)


def random_sentence(rng: np.random.Generator) -> str:
    """One sentence of about 5 to 18 words, capitalised, ending in a full stop."""
    text = _clause(rng)
    if rng.random() < 0.35:
        text += f", {CONNECTIVES[rng.integers(len(CONNECTIVES))]} {_clause(rng)}"
    return text[0].upper() + text[1:] + "."


def random_text(rng: np.random.Generator, min_words: int) -> str:
    """Sentences appended until the text has at least ``min_words`` words."""
    sentences: list[str] = []
    while sum(len(s.split()) for s in sentences) < max(min_words, 1):
        sentences.append(random_sentence(rng))
    return " ".join(sentences)
