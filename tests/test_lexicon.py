"""Query expansion (search_svc/lexicon.py over the committed WordNet-derived search_svc/lexicon.json),
and a category word finding a photo through the real search stack of tests/test_search.py."""
from __future__ import annotations

import pytest

from photostore.auth import bearer_metadata
from photostore.backends import open_metadata, open_vectors
from photostore.backends.base import VectorObject
from photos.v1 import search_pb2
from search_svc import lexicon
from search_svc.service import MAX_EXPANSION_WORDS, keyword_terms
from tests.harness import add_user
from tests.test_search import Photo, record, stack, tiny  # noqa: F401  (fixtures)

pytestmark = pytest.mark.timeout(180)


def test_category_words_reach_their_members():
    bird = lexicon.expand("bird")
    assert {"eagle", "kite", "owl"} <= set(bird)
    assert {"car", "motorcycle", "bus"} <= set(lexicon.expand("vehicle"))
    assert {"pizza", "banana"} & set(lexicon.expand("food"))
    assert "daisy" in lexicon.expand("plant")
    assert {"dog", "cat", "horse"} <= set(lexicon.expand("animal"))
    assert "terrier" in lexicon.expand("dog")
    for term in ("bird", "animal", "vehicle", "food", "dog"):  # capped, the term itself first
        words = lexicon.expand(term)
        assert words[0] == term and len(words) == len(set(words)) <= lexicon.MAX_WORDS_PER_TERM


def test_members_are_named_by_a_word_that_means_them():
    assert "bald" not in lexicon.expand("bird")  # "bald eagle" stands as eagle
    assert "dog" not in lexicon.expand("food")  # a hot dog is no dog
    assert lexicon.expand("sunset") == ["sunset", "sunsets"]  # not in WordNet's label tree: forms only
    assert "lumbermill" not in lexicon.expand("plant")  # the factory sense is not meant


def test_plurals_singulars_synonyms_and_numbers():
    assert lexicon.expand("dogs")[:2] == ["dogs", "dog"]
    assert lexicon.expand("dog")[:2] == ["dog", "dogs"]  # count labels say "2 dogs"
    assert "person" in lexicon.expand("people") and "people" in lexicon.expand("person")
    assert "mouse" in lexicon.expand("mice") and "goose" in lexicon.expand("geese")
    assert "knife" in lexicon.expand("knives")
    assert "bus" in lexicon.expand("buses") and "buses" in lexicon.expand("bus")
    assert "beach" in lexicon.expand("beaches")  # an unknown word: the likeliest rule
    assert lexicon.expand("scissors")[0] == "scissors" and "scissor" not in lexicon.expand("scissors")
    assert "couch" in lexicon.expand("sofa") and "car" in lexicon.expand("automobile")
    assert "2" in lexicon.expand("two") and "10" in lexicon.expand("ten") and "two" in lexicon.expand("2")


def test_adjacent_terms_naming_one_lemma_add_its_words():
    expansions = lexicon.expand_query(keyword_terms("a bird of prey"))
    assert {"eagle", "kite"} <= set(expansions["prey"])  # "prey" alone names nothing
    assert "teddy" in lexicon.expand_query(["teddy", "bear"])["bear"]
    assert "hotdog" in lexicon.expand_query(["hot", "dog"])["hot"]
    assert "hotdog" not in lexicon.expand("hot")


def test_a_category_word_finds_a_photo_by_its_label_through_the_search_stack(stack):
    """carol's photos carry only a filename and label names in their keywords, as the worker writes
    them; "a bird" finds the bald eagle, "two dogs" the detector's "2 dogs", "people" a person."""
    settings = stack.settings
    carol_id, key = add_user(settings, "carol")
    carol = bearer_metadata(key)
    photos = {"carol-eagle": [("bald eagle", 0.8)], "carol-dogs": [("2 dogs", 0.9)],
              "carol-cat": [("tabby", 0.7)], "carol-person": [("person", 0.9), ("ballplayer", 0.4)]}
    metadata, vectors = open_metadata(settings), open_vectors(settings)
    for number, (photo_id, labels) in enumerate(photos.items()):
        photo = Photo(photo_id, carol_id, None, None, None, "", "", [])
        metadata.insert_photo(record(photo, f"IMG_{number:04d}.jpg", labels, ""), request_id=photo_id)
        keywords = " ".join([f"IMG_{number:04d}.jpg", *(name for name, _ in labels)])
        vectors.upsert(VectorObject(photo_id, carol_id, "", None, keywords=keywords))

    def keyword_hits(query: str) -> dict[str, tuple[float, list[str]]]:
        response = stack.search.SearchPhotos(search_pb2.SearchPhotosRequest(query=query, min_score=0),
                                             metadata=carol, timeout=30)
        return {h.photo.name.removeprefix("photos/"): (h.signals.keyword, list(h.matched_terms))
                for h in response.hits if h.signals.HasField("keyword")}

    assert keyword_hits("a bird") == {"carol-eagle": (1.0, ["eagle"])}
    assert keyword_hits("birds of prey") == {"carol-eagle": (1.0, ["eagle"])}
    assert keyword_hits("two dogs") == {"carol-dogs": (1.0, ["dogs", "2"])}
    animals = keyword_hits("an animal")
    assert animals.items() >= {"carol-dogs": (1.0, ["dogs"]), "carol-eagle": (1.0, ["eagle"])}.items()
    assert "carol-person" not in animals
    assert keyword_hits("cats") == {"carol-cat": (1.0, ["tabby"])}
    assert keyword_hits("people") == {"carol-person": (1.0, ["person", "ballplayer"])}
    assert keyword_hits("eagle and owl") == {"carol-eagle": (0.5, ["eagle"])}  # share of the query's terms
    # A query of several categories stays within the lookup cap.
    words = {w for ws in lexicon.expand_query(keyword_terms("animal food vehicle plant")).values() for w in ws}
    assert len(words) > MAX_EXPANSION_WORDS
    assert keyword_hits("animal food vehicle plant")["carol-dogs"] == (0.25, ["dogs"])
