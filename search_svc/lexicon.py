"""Query expansion for the keyword signal: the words to look up for each query word.

A photo's keywords are its filename, label names and text read; a query says what it means in its
own words. For each query word: itself, its singular and plural ("dogs" -> dog, "people" ->
person; the detector's count labels say "2 dogs"), number words ("two" -> 2), and when it names
a category of WordNet (search_svc/lexicon.json, written by scripts/gen_lexicon.py) a word for each
label below it, the detector's names and the most familiar words first ("bird" -> vulture, owl,
goose, ..., eagle, ..., kite).
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

from photostore.backends.base import WORD

LEXICON_PATH = Path(__file__).with_name("lexicon.json")
# Words looked up per query word, itself and its forms included: enough for a category's common
# members, few enough that the lookup stays in milliseconds (docs/SEARCH.md).
MAX_WORDS_PER_TERM = 60
# Nouns whose plural is the same word.
INVARIANT = frozenset("sheep deer fish moose bison elk salmon trout aircraft".split())
# WordNet's noun suffix rules (morphy), most specific first.
SUFFIXES = (("ies", "y"), ("ches", "ch"), ("shes", "sh"), ("xes", "x"), ("zes", "z"), ("ses", "s"),
            ("men", "man"), ("s", ""))


def suffix_singulars(word: str) -> list[str]:
    """What the suffix rules make of `word` as a plural, most specific rule first."""
    return [word[:-len(suffix)] + base for suffix, base in SUFFIXES
            if word.endswith(suffix) and len(word) > len(suffix) + 1 and not word.endswith("ss")]


def suffix_plural(word: str) -> str:
    if word.endswith("y") and len(word) > 2 and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if word.endswith("man"):
        return word[:-3] + "men"
    return word + "s"


class Lexicon:
    def __init__(self, data: dict):
        self.labels: list[str] = data["labels"]
        self.lemmas: dict[str, list[int]] = data["lemmas"]
        self.singular_of: dict[str, str] = data["plurals"]
        # Irregular plurals only: "busses" is listed, "buses" is what the rules (and labels) say.
        self.plural_of = {singular: plural for plural, singular in data["plurals"].items()
                          if not plural.startswith(singular + singular[-1])}
        self.numbers = {**data["numbers"], **{digit: word for word, digit in data["numbers"].items()}}
        self.keys: list[str] = data["keys"]
        self.familiarity: list[int] = data["familiarity"]
        self.detector_labels = set(range(data["object_labels_start"], len(self.labels)))
        self.known = {w for text in [*self.lemmas, *self.labels] for w in WORD.findall(text.lower())}

    def singular(self, word: str) -> str | None:
        """The singular of a plural word, None when `word` is not a plural (as far as rules and
        exceptions tell)."""
        if word in self.singular_of:
            return self.singular_of[word]
        candidates = suffix_singulars(word)
        for candidate in candidates:
            if candidate in self.known:
                return candidate
        if word in self.known or not candidates:
            return None
        # An unknown word: the likeliest rule ("beaches" -> beach, "houses" -> house).
        if word.endswith("ies"):
            return word[:-3] + "y"
        if word.endswith(("ches", "shes", "xes", "zes", "sses")):
            return word[:-2]
        return word[:-1] if not word.endswith(("us", "is")) else None

    def plural(self, word: str) -> str | None:
        """The plural of a word by the rules and irregular plurals; None for numbers, words
        that look plural already ("scissors", "glasses"; "bus" is not) and nouns whose plural is
        the same word."""
        if word in self.plural_of:
            return self.plural_of[word]
        if word in INVARIANT or not word.isalpha() or word.endswith("s") and not word.endswith(("us", "ss")):
            return None
        return suffix_plural(word)

    def expand(self, term: str) -> list[str]:
        """The words to look up for one query term (a word, or a phrase such as "bird of prey"),
        the term first; at most MAX_WORDS_PER_TERM."""
        return list(self._expand(term))

    @functools.lru_cache(maxsize=4096)
    def _expand(self, term: str) -> tuple[str, ...]:
        term = " ".join(WORD.findall(term.lower()))
        if not term:
            return ()
        head = term.split()[-1]
        singular = self.singular(head)
        base = term if singular is None else term[:-len(head)] + singular
        words = []
        if " " not in term:
            words += [term, singular or self.plural(term), self.numbers.get(term)]
        members = list(dict.fromkeys(self.lemmas.get(term, []) + self.lemmas.get(base, [])))
        words += self._member_words(members)
        return tuple(dict.fromkeys(w for w in words if w))[:MAX_WORDS_PER_TERM]

    def expand_query(self, terms: list[str]) -> dict[str, list[str]]:
        """{term: the words to look up for it} for a query's keyword terms (stopwords left out).
        Two adjacent terms naming one lemma ("teddy bear", "hot dog"; "bird prey" read as "bird of
        prey") add that lemma's words to both terms ("bear" is found in a photo labelled "teddy")."""
        expansions = {term: self.expand(term) for term in terms}
        for first, second in zip(terms, terms[1:]):
            firsts, seconds = {first, self.singular(first) or first}, {second, self.singular(second) or second}
            phrase = next((p for a in firsts for b in seconds for p in (f"{a} {b}", f"{a} of {b}")
                           if p in self.lemmas), None)
            if phrase is None:
                continue
            for term in (first, second):
                expansions[term] = list(dict.fromkeys(expansions[term] + self.expand(phrase)))
        return expansions

    def _member_words(self, members: list[int]) -> list[str]:
        """The words standing for the member labels (search_svc/lexicon.json "keys": "bald eagle"
        -> eagle): the detector's plain names first, with their plural (count labels: "2 dogs"),
        then the most familiar words (SemCor tag counts), then those standing for the most members,
        then the closest."""
        chosen: dict[str, list[int]] = {}
        for index in members:
            if word := self.keys[index]:
                chosen.setdefault(word, []).append(index)
        plain = {self.labels[i] for i in members if i in self.detector_labels and " " not in self.labels[i]}
        ranked = sorted(chosen, key=lambda w: (w not in plain, -max(self.familiarity[i] for i in chosen[w]),
                                               -len(chosen[w])))
        words = []
        for word in ranked:
            words.append(word)
            if word in plain and (plural := self.plural(word)):
                words.append(plural)
        return words


@functools.cache
def lexicon() -> Lexicon:
    """The lexicon, read once."""
    return Lexicon(json.loads(LEXICON_PATH.read_text(encoding="utf-8")))


def expand(term: str) -> list[str]:
    return lexicon().expand(term)


def expand_query(terms: list[str]) -> dict[str, list[str]]:
    return lexicon().expand_query(terms)
