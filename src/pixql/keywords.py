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


def keyword_classes(keyword, classes):
    """(the word that matched, indices of the classes it names): the keyword as written, else its
    last word made singular ('dogs', 'running shoes', 'puppies', 'dresses'), as class names and
    WordNet's are."""
    found = matching_classes(keyword, classes)
    if found or "," in str(keyword):
        return str(keyword).strip(), found
    for word in _singulars(str(keyword).strip()):
        found = matching_classes(word, classes)
        if found:
            return word, found
    return str(keyword).strip(), []


def _singulars(text):
    """Singular forms `text`'s last word may have, most likely first."""
    head, _, last = text.rpartition(" ")
    lower = last.lower()
    forms = []
    if lower.endswith("ies") and len(lower) > 4:
        forms.append(last[:-3] + "y")  # butterflies
    if lower.endswith("s") and not lower.endswith("ss"):
        forms.append(last[:-1])  # dogs, shoes, kites (not 'kit')
    if lower.endswith("ves"):
        forms += [last[:-3] + "f", last[:-3] + "fe"]  # wolves, knives
    if lower.endswith(("ses", "xes", "zes", "ches", "shes")):
        forms.append(last[:-2])  # dresses, boxes, watches
    return [f"{head} {form}" if head else form for form in forms]


def matching_classes(keyword, classes):
    """Indices of the classes `keyword` names (case-insensitive); ImageNet classes match their
    WordNet ancestors' names too."""
    word, whole = str(keyword).strip().lower(), _words(keyword)
    # (a label PREDICT wrote, "tabby, tabby cat", is all its synonyms at once; spaces around commas aside)
    found = [i for i, name in enumerate(classes) if word in _words(name) or whole == _words(name)]
    if is_imagenet(classes):
        found = sorted(set(found) | {i for i in range(len(classes)) if word in ancestors(i)})
    return found
