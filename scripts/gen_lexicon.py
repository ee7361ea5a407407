#!/usr/bin/env python3
"""Writes search_svc/lexicon.json, the query-expansion data of the keyword signal (`make lexicon`).

Dev-time only: reads the WordNet 3.0 noun database of Debian's wordnet-base (/usr/share/wordnet;
`apt-get install wordnet-base`); the product reads only the committed JSON. For the labels photos
carry (the label model's ImageNet-1k classes, named as torchvision names them, and the object
detector's COCO names, embed_svc/objects.py) it maps each lemma of a class's synset and of the
synsets above it (hypernyms, up to MAX_DEPTH steps, stopping at TOO_GENERAL) to the labels it
reaches, closest first. Also the noun plural exceptions whose singular is a lexicon word, and
number words.

    .venv/bin/python scripts/gen_lexicon.py [--wordnet /usr/share/wordnet] [--out search_svc/lexicon.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Steps up from a class. 11 is what "animal" needs to reach its deepest classes, the dog breeds
# (golden retriever -> retriever -> sporting dog -> hunting dog -> dog -> canine -> carnivore ->
# placental -> mammal -> vertebrate -> chordate -> animal); "vehicle", "food", "plant",
# "furniture", "clothing" need at most 7. Higher synsets are cut by TOO_GENERAL anyway.
MAX_DEPTH = 11

# Synsets whose lemmas never expand (nor does anything above them): each reaches hundreds of
# unrelated labels, or names something vague ("object", "device", "unit", "being", "covering",
# "good", "structure", "matter") that a query rarely means as "any of these".
TOO_GENERAL = {
    "00001740",  # entity
    "00001930",  # physical entity
    "00002137",  # abstraction
    "00002684",  # object, physical object
    "00003553",  # whole, unit
    "00004258",  # living thing, animate thing
    "00004475",  # organism, being
    "00019128",  # natural object
    "00020090",  # substance
    "00020827",  # matter
    "00021939",  # artifact, artefact
    "03076708",  # commodity, trade good, good
    "03093574",  # consumer goods
    "03122748",  # covering
    "03183080",  # device
    "03575240",  # instrumentality, instrumentation
    "04341686",  # structure, construction
    "15046900",  # solid
}

# Senses a photo search does not mean although they are a lemma's first ("plant": the factory).
NOT_MEANT = {
    "03956922",  # plant, works, industrial plant
}

# A lemma expands through a hypernym (a category: "plant" the flora) only where that synset is
# among the lemma's first senses (WordNet orders them by frequency): "good" (commodity, 4th
# sense) and "wind" (wind instrument) do not pull in labels. Class synsets themselves always count.
MAX_CATEGORY_SENSE = 3

# COCO names -> their WordNet 3.0 noun synset (checked by hand: first senses are wrong for
# mouse, kite, tv, hot dog, banana..., some names are not lemmas).
COCO_SYNSETS = {
    "person": "00007846", "bicycle": "02834778", "car": "02958343", "motorcycle": "03790512",
    "airplane": "02691156", "bus": "02924116", "train": "04468005", "truck": "04490091",
    "boat": "02858304", "traffic light": "06874185", "fire hydrant": "03346898",
    "stop sign": "06794110", "parking meter": "03891332", "bench": "02828884", "bird": "01503061",
    "cat": "02121620", "dog": "02084071", "horse": "02374451", "sheep": "02411705", "cow": "02403454",
    "elephant": "02503517", "bear": "02131653", "zebra": "02391049", "giraffe": "02439033",
    "backpack": "02769748", "umbrella": "04507155", "handbag": "02774152", "tie": "03815615",
    "suitcase": "02773838", "frisbee": "03397947", "skis": "04228054", "snowboard": "04251791",
    "sports ball": "02778669", "kite": "03621473", "baseball bat": "02799175",
    "baseball glove": "02800213", "skateboard": "04225987", "surfboard": "04363559",
    "tennis racket": "04409806", "bottle": "02876657", "wine glass": "04592099", "cup": "03147509",
    "fork": "03383948", "knife": "03623556", "spoon": "04284002", "bowl": "02881193",
    "banana": "07753592", "apple": "07739125", "sandwich": "07695965", "orange": "07747607",
    "broccoli": "07714990", "carrot": "07730207", "hot dog": "07697537", "pizza": "07873807",
    "donut": "07639069", "cake": "07628870", "chair": "03001627", "couch": "04256520",
    "potted plant": "13083023", "bed": "02818832", "dining table": "03201208",
    "toilet": "04446521", "tv": "04405907", "laptop": "03642806", "mouse": "03793489",
    "remote": "04074963", "keyboard": "03614007", "cell phone": "02992529",
    "microwave": "03761084", "oven": "03862676", "toaster": "04442312", "sink": "04223580",
    "refrigerator": "04070727", "book": "02870092", "clock": "03046257", "vase": "04522168",
    "scissors": "04148054", "teddy bear": "04399382", "hair drier": "03483316",
    "toothbrush": "04453156",
}

# Hypernym links WordNet 3.0 lacks: it files buses and trains under "public transport" only, so
# "vehicle" would not reach them (nor school bus, minibus, trolleybus, passenger car...).
EXTRA_HYPERNYMS = {
    "02924116": ["03791235"],  # bus -> motor vehicle
    "04468005": ["04524313"],  # train -> vehicle
}

# Plurals WordNet's exception list lacks (it lists "people" as a word of its own).
EXTRA_PLURALS = {"people": "person", "persons": "person", "skis": "ski"}
IMAGENET_CLASSES = 1000
LINK_WORDS = frozenset("a an and de for in la le of on the to with".split())
NUMBERS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
           "twelve")


def read_nouns(wordnet: Path) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """{offset: lemmas} and {offset: hypernym offsets} of data.noun (see wndb(5))."""
    lemmas, hypernyms = {}, {}
    with open(wordnet / "data.noun", encoding="utf-8") as data:
        for line in data:
            if line.startswith("  "):  # the licence header
                continue
            fields = line.split(" | ", 1)[0].split()
            offset, count = fields[0], int(fields[3], 16)
            lemmas[offset] = [fields[4 + 2 * i] for i in range(count)]
            at = 4 + 2 * count
            pointers = fields[at + 1:at + 1 + 4 * int(fields[at])]
            hypernyms[offset] = [pointers[i + 1] for i in range(0, len(pointers), 4)
                                 if pointers[i] in ("@", "@i") and pointers[i + 2] == "n"]
    for offset, extra in EXTRA_HYPERNYMS.items():
        hypernyms[offset] += extra
    return lemmas, hypernyms


def read_senses(wordnet: Path) -> dict[str, list[str]]:
    """{lemma: its synset offsets, most frequent sense first} of index.noun."""
    senses = {}
    with open(wordnet / "index.noun", encoding="utf-8") as index:
        for line in index:
            if line.startswith("  "):
                continue
            fields = line.split()
            count, pointers = int(fields[2]), int(fields[3])
            senses[fields[0]] = fields[6 + pointers:6 + pointers + count]
    return senses


def read_tag_counts(wordnet: Path) -> dict[tuple[str, int], int]:
    """{(lemma, sense number): times tagged in the SemCor corpus} of the noun senses (cntlist.rev):
    how familiar a word is in that sense ("owl" 3, "chiton" 0)."""
    counts = {}
    with open(wordnet / "cntlist.rev", encoding="utf-8") as cntlist:
        for line in cntlist:
            key, number, count = line.split()
            lemma, _, kind = key.partition("%")
            if kind.startswith("1:"):
                counts[(lemma, int(number))] = int(count)
    return counts


def read_exceptions(wordnet: Path) -> dict[str, str]:
    with open(wordnet / "noun.exc", encoding="utf-8") as exc:
        return {plural: bases[0] for plural, *bases in (line.split() for line in exc) if bases}


def label_synsets() -> tuple[list[str], list[str]]:
    """The label names as photos carry them and each one's synset offset: ImageNet-1k in class
    order, then the COCO names."""
    import timm.data
    from torchvision.models import ResNet50_Weights

    from embed_svc.objects import COCO_CLASSES

    wnids = (Path(timm.data.__file__).parent / "_info" / "imagenet_synsets.txt").read_text().split()
    names = list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
    assert len(wnids) == len(names) == IMAGENET_CLASSES, "ImageNet class lists disagree"
    coco = list(dict.fromkeys(COCO_CLASSES.values()))
    missing = set(coco) - set(COCO_SYNSETS)
    assert not missing, f"COCO names without a synset in COCO_SYNSETS: {sorted(missing)}"
    return names + coco, [w.removeprefix("n") for w in wnids] + [COCO_SYNSETS[name] for name in coco]


def key_word(label: str, start: str, distance: dict[str, int], lemmas: dict[str, list[str]]
             ) -> tuple[str, str | None]:
    """The word of a label that stands for it, and the synset it names: the label itself when one
    word, else its last word that is a lemma above it ("bald eagle" -> eagle, "sports car" -> car),
    else none ("hot dog" is no dog, "African grey" no grey: such words would find wrong photos)."""
    from photostore.backends.base import WORD
    words = WORD.findall(label.lower())
    if len(words) == 1:
        return words[0], start
    for word in reversed(words):
        for synset in sorted(distance, key=distance.get):
            if word not in LINK_WORDS and word in (lemma_text(lemma) for lemma in lemmas[synset]):
                return word, synset
    return "", None


def rule_singulars(word: str) -> list[str]:
    from search_svc.lexicon import suffix_singulars
    return suffix_singulars(word)


def lemma_text(lemma: str) -> str:
    """A lemma as query words split (WORD): "pay-phone" -> "pay phone"."""
    from photostore.backends.base import WORD
    return " ".join(WORD.findall(lemma.replace("_", " ").lower()))


def build(wordnet: Path) -> dict:
    lemmas, hypernyms = read_nouns(wordnet)
    senses = read_senses(wordnet)
    labels, synsets = label_synsets()
    tag_counts = read_tag_counts(wordnet)
    # {lemma: {label index: closest distance}}
    reached: dict[str, dict[int, int]] = {}
    keys, familiarity = [], []
    for index, start in enumerate(synsets):
        distance, frontier = {start: 0}, [start]
        for depth in range(1, MAX_DEPTH + 1):
            frontier = [up for synset in frontier for up in hypernyms[synset]
                        if up not in TOO_GENERAL and up not in NOT_MEANT and up not in distance]
            distance.update((up, depth) for up in frontier)
        for synset, steps in distance.items():
            for lemma in lemmas[synset]:
                if steps and synset not in senses.get(lemma.lower(), [])[:MAX_CATEGORY_SENSE]:
                    continue
                closest = reached.setdefault(lemma_text(lemma), {})
                closest[index] = min(steps, closest.get(index, steps))
        key, synset = key_word(labels[index], start, distance, lemmas)
        keys.append(key)
        sense = senses.get(key, []).index(synset) + 1 if synset in senses.get(key, []) else 0
        familiarity.append(tag_counts.get((key, sense), 0))
    words = {part for text in [*reached, *labels] for part in text.lower().split()}
    # Exceptions to the suffix rules (search_svc/lexicon.py) for lexicon words, unless the rules
    # already give a lexicon word ("syringes" is the plural of syringe, not of syrinx).
    plurals = {p: s for p, s in {**read_exceptions(wordnet), **EXTRA_PLURALS}.items()
               if s in words and p != s and "_" not in p and not words & set(rule_singulars(p))}
    return {
        "about": "Generated by scripts/gen_lexicon.py from WordNet 3.0 (make lexicon); do not edit.",
        "max_depth": MAX_DEPTH,
        "labels": labels,
        "object_labels_start": IMAGENET_CLASSES,  # the COCO names follow the ImageNet classes
        # lemma -> label indices, closest first (then in label order)
        # per label: the word that stands for it in a lookup ("" for none) and how familiar that
        # word is in that sense (SemCor tag count): member words are tried most familiar first
        "keys": keys,
        "familiarity": familiarity,
        "lemmas": {lemma: sorted(found, key=lambda i: (found[i], i)) for lemma, found in sorted(reached.items())},
        "plurals": dict(sorted(plurals.items())),
        "numbers": {word: str(n) for n, word in enumerate(NUMBERS, start=1)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wordnet", type=Path, default=Path("/usr/share/wordnet"))
    parser.add_argument("--out", type=Path, default=ROOT / "search_svc" / "lexicon.json")
    args = parser.parse_args()
    if not (args.wordnet / "data.noun").exists():
        sys.exit(f"no WordNet database in {args.wordnet}: apt-get install wordnet-base")
    lexicon = build(args.wordnet)
    text = json.dumps(lexicon, separators=(",", ":"), ensure_ascii=False)
    args.out.write_text(text + "\n", encoding="utf-8")
    print(f"{args.out}: {len(lexicon['lemmas'])} lemmas, {len(lexicon['labels'])} labels, "
          f"{len(lexicon['plurals'])} plurals, {len(text)} bytes")


if __name__ == "__main__":
    main()
