"""What a keyword means among a model's classes, and a photo's tags.

A keyword matches a class whose name (any of its comma-separated synonyms, or the whole name as
PREDICT writes it) is the keyword, and, for the 1000 ImageNet classes, a class any of whose
WordNet ancestors is named so: "dog" finds all 118 dog breeds, "vehicle" 67 classes. The ancestors ship with pixql
(data/imagenet_hypernyms.json, from Princeton WordNet 3.0; bench/make_imagenet_hypernyms.py
wrote it).
"""

import functools
import json
from importlib import resources


def _words(text):
    return {w.strip().lower() for w in str(text).split(",") if w.strip()}


@functools.lru_cache(maxsize=1)
def _hierarchy():
    with resources.files("pixql").joinpath("data/imagenet_hypernyms.json").open(encoding="utf-8") as f:
        return json.load(f)


@functools.lru_cache(maxsize=1)
def _imagenet_names():
    """{ImageNet class index: every name it and its WordNet ancestors go by} (lower case)."""
    tree = _hierarchy()
    synsets = tree["synsets"]

    def ancestry(synset, seen):
        if synset in seen:
            return set()
        seen.add(synset)
        entry = synsets[synset]
        names = {n.lower() for n in entry["names"]}
        for parent in entry["parents"]:
            names |= ancestry(parent, seen)
        return names

    return [ancestry(synset, set()) for synset in tree["classes"]]


def is_imagenet(classes):
    from pixql.ml.imagenet import imagenet_class_names

    return len(classes) == 1000 and list(classes) == imagenet_class_names()


def ancestors(class_index):
    """The names an ImageNet class and its more general kinds go by (lower case)."""
    return _imagenet_names()[class_index]


def matching_classes(keyword, classes):
    """Indices of the classes `keyword` names (case-insensitive); ImageNet classes match their
    WordNet ancestors' names too."""
    word, whole = str(keyword).strip().lower(), _words(keyword)
    # (a label PREDICT wrote, "tabby, tabby cat", is all its synonyms at once; spaces around commas aside)
    found = [i for i, name in enumerate(classes) if word in _words(name) or whole == _words(name)]
    if is_imagenet(classes):
        found = sorted(set(found) | {i for i in range(len(classes)) if word in ancestors(i)})
    return found
