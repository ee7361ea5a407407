"""Evidence per photo with the real models: objects with counts (SSD-MobileNet-v2 COCO), colour
names, and the OCR tags, and where ImageAnalyzer.analyze puts them."""
from __future__ import annotations

import logging
import time

import pytest
from PIL import Image, ImageOps

from embed_svc.colours import PROTOTYPES, colour_labels
from embed_svc.objects import COCO_CLASSES, ObjectModel, count_label
from embed_svc.signals import ImageAnalyzer, OcrModel
from photostore.settings import Settings
from tests.photo_samples import SAMPLE_FILES
from tests.test_embed import encode
from tests.test_signals import COUNTED, sign

pytestmark = pytest.mark.timeout(300)

SAMPLES = {path.name: path for path in SAMPLE_FILES}


def photo(name: str) -> Image.Image:
    return Image.open(SAMPLES[name]).convert("RGB")


def side_by_side(*images: Image.Image) -> Image.Image:
    """One photo of the given ones next to each other, at the height of the lowest."""
    height = min(im.height for im in images)
    images = [im.resize((round(im.width * height / im.height), height)) for im in images]
    joined = Image.new("RGB", (sum(im.width for im in images), height))
    for x, im in zip([sum(im.width for im in images[:i]) for i in range(len(images))], images):
        joined.paste(im, (x, 0))
    return joined


def two_horses() -> Image.Image:
    """skimage's horse and its mirror image: a photo with two horses."""
    return side_by_side(photo("horse.png"), ImageOps.mirror(photo("horse.png")))


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> Settings:
    return Settings(data_dir=tmp_path_factory.mktemp("data"), torch_threads=1)


@pytest.fixture(scope="module")
def objects(settings):
    model = ObjectModel(settings)
    model.load()
    yield model
    model.close()


@pytest.fixture(scope="module")
def analyzer(settings):
    analyzer = ImageAnalyzer(settings)
    for role in analyzer.roles:
        role.model.load()
    yield analyzer
    analyzer.close()


def detect(model: ObjectModel, images: list[Image.Image]) -> list[list[tuple[str, float]]]:
    return [f.result() for f in model.submit(images)]


def test_the_coco_map_has_the_80_classes_of_the_detector():
    assert len(COCO_CLASSES) == 80 and len(set(COCO_CLASSES.values())) == 80
    assert (COCO_CLASSES[1], COCO_CLASSES[18], COCO_CLASSES[90]) == ("person", "dog", "toothbrush")


def test_counted_labels_use_plurals():
    assert [count_label("dog", 1), count_label("dog", 2), count_label("person", 3), count_label("bus", 2),
            count_label("sheep", 4), count_label("wine glass", 2)] == [
        "dog", "2 dogs", "3 people", "2 buses", "4 sheep", "2 wine glasses"]


def test_objects_find_the_astronaut_and_count_two_horses(objects, settings):
    astronaut, horses, cup, empty = detect(objects, [photo("astronaut.png"), two_horses(), photo("coffee.png"),
                                                     Image.new("RGB", (300, 200), "white")])
    assert [name for name, _ in astronaut] == ["person"]
    assert [name for name, _ in horses] == ["2 horses"]
    assert {"cup", "bowl"} <= {name for name, _ in cup}
    assert empty == []
    for labels in (astronaut, horses, cup):
        scores = [score for _, score in labels]
        assert scores == sorted(scores, reverse=True) and all(settings.object_min_score <= s <= 1 for s in scores)
    assert objects.model_id == "ssd-mobilenet-v2-coco" and objects.image_size == 300


def test_colours_name_a_red_and_blue_image_and_sample_photos():
    red_blue = Image.new("RGB", (200, 100), (220, 30, 30))
    red_blue.paste((30, 60, 200), (0, 0, 200, 25))  # a quarter blue
    red, blue = ("red", pytest.approx(0.75, abs=0.02)), ("blue", pytest.approx(0.25, abs=0.02))
    assert colour_labels(red_blue, 0.1) == [red, blue]
    assert colour_labels(red_blue, 0.3) == [red]

    def names(name: str) -> list[str]:
        return [colour for colour, _ in colour_labels(photo(name), 0.1)]

    assert names("rocket.jpg")[0] == "blue"  # the sky
    assert names("chelsea.png")[0] == "brown"  # a tabby cat
    assert names("moon.png") == ["grey"]  # a grey-scale photo has no hue
    assert "orange" in names("astronaut.png")  # the suit
    assert set(names("logo.png")) == {"green", "orange", "white"}
    for name in ("coffee.png", "flower.jpg", "china.jpg"):
        shares = colour_labels(photo(name), 0.0)
        assert {colour for colour, _ in shares} <= set(PROTOTYPES)
        assert sum(share for _, share in shares) == pytest.approx(1.0)


IMAGENET, OBJECT, COLOUR, TAG = range(4)


def kind(name: str) -> int:
    """Which kind of evidence a label name is, in the order analyze() gives them."""
    if name in ("text", "document"):
        return TAG
    if name in PROTOTYPES:
        return COLOUR
    return OBJECT if name in COCO_CLASSES.values() or COUNTED.match(name) else IMAGENET


def names(labels: list[tuple[str, float]], of_kind: int) -> list[str]:
    return [name for name, _ in labels if kind(name) == of_kind]


def test_analyze_puts_imagenet_labels_then_objects_colours_and_text_tags(analyzer):
    coffee, horses, page, shop = analyzer.analyze([
        SAMPLES["coffee.png"].read_bytes(), encode(two_horses(), "PNG"), SAMPLES["page.png"].read_bytes(),
        encode(sign(), "PNG")])
    for analysis in (coffee, horses, page, shop):
        kinds = [kind(name) for name, _ in analysis.labels]
        assert kinds == sorted(kinds), analysis.labels
    assert coffee.labels[0][0] == "espresso"
    assert {"cup", "bowl"} <= set(names(coffee.labels, OBJECT))
    assert "brown" in names(coffee.labels, COLOUR)
    assert names(horses.labels, OBJECT) == ["2 horses"]
    # OCR reads one letter in the coffee photo (a misreading: no tag), 35 words of a page, a sign's 2 words.
    assert [names(a.labels, TAG) for a in (coffee, horses, page, shop)] == [[], [], ["text", "document"], ["text"]]
    assert len(page.ocr_text.split()) >= analyzer._settings.document_min_words > len(shop.ocr_text.split())
    assert analyzer.model_id == "efficientnet-lite0+rapidocr-1280px+ssd-mobilenet-v2-coco+all-MiniLM-L6-v2"

    # Without reading text (the stage that makes photos searchable): no objects, no tags, same colours.
    coffee_fast, page_fast = analyzer.analyze([SAMPLES["coffee.png"].read_bytes(),
                                               SAMPLES["page.png"].read_bytes()], read_text=False)
    assert [name for name, _ in coffee_fast.labels + page_fast.labels if kind(name) in (OBJECT, TAG)] == []
    assert [label for label in coffee_fast.labels if kind(label[0]) == COLOUR] == [
        label for label in coffee.labels if kind(label[0]) == COLOUR]


def test_objects_and_colours_turn_the_text_vector_towards_them(analyzer):
    """The vector of the two horses is nearer "two horses" than the ImageNet labels alone (dogs)."""
    [horses] = analyzer.analyze([encode(two_horses(), "PNG")])
    imagenet = [label for label in horses.labels if kind(label[0]) == IMAGENET]
    [imagenet_only] = analyzer._text_vectors([imagenet[:3]], [""])
    query = analyzer.embed_texts(["horses"])[0]
    assert horses.text_vector @ query > imagenet_only @ query + 0.1


def test_colours_alone_make_no_text_vector(analyzer):
    """A blank image is "white", but has nothing to search by: no vector (FindSimilar then says
    IMAGE_HAS_NO_SIGNAL while CLIP is missing, tests/test_gateway_openapi.py)."""
    blank = Image.new("RGB", (64, 64), "white")
    [analysis] = analyzer.analyze([encode(blank, "PNG")])
    assert [name for name, _ in analysis.labels] == ["white"]
    assert analysis.text_vector is None


def test_objects_turn_off_with_their_setting_or_ocr(tmp_path):
    assert ImageAnalyzer(Settings(data_dir=tmp_path, objects_enabled=False)).objects is None
    without_ocr = ImageAnalyzer(Settings(data_dir=tmp_path, ocr_enabled=False))
    assert without_ocr.objects is None and [r.role for r in without_ocr.roles] == ["labels", "sentence"]
    assert without_ocr.model_id == "efficientnet-lite0+all-MiniLM-L6-v2"



def test_text_stage_models_unload_when_idle_and_come_back_on_use(tmp_path, caplog):
    """OCR and the detector drop their engines after text_stage_models_ttl_seconds unused (idle
    memory) and load them again, with the same results, when photos next need them."""
    settings = Settings(data_dir=tmp_path, torch_threads=1, text_stage_models_ttl_seconds=0.5)
    ocr, detector = OcrModel(settings), ObjectModel(settings)
    try:
        for model in (ocr, detector):
            model.load()
        horses, text = two_horses(), sign("ROUTE 66")
        first = detect(detector, [horses]), [f.result() for f in ocr.submit([text])]
        deadline = time.monotonic() + 60
        while ocr.engines_loaded or detector.engines_loaded:
            assert time.monotonic() < deadline, "not unloaded"
            time.sleep(0.1)
        assert ocr.ready and detector.ready  # still ready: they load again when used
        with caplog.at_level(logging.INFO, logger="embed_svc.model"):
            assert (detect(detector, [horses]), [f.result() for f in ocr.submit([text])]) == first
        reloaded = [r.getMessage() for r in caplog.records if "loaded again" in r.getMessage()]
        assert [m.split()[1] for m in reloaded] == ["object", "OCR"], reloaded
    finally:
        ocr.close()
        detector.close()
