"""photos.v1.EmbedService: CLIP text and image embeddings, and labels, OCR text and text vectors
of images (the second signal) over gRPC."""
from __future__ import annotations

import logging

import grpc

from embed_svc.limits import MAX_IMAGES, MAX_TEXTS
from embed_svc.model import ClipModel, ImageDecodeError, InferenceModel, ModelNotReadyError
from embed_svc.signals import SENTENCE, ImageAnalyzer
from photos.v1 import embed_pb2, embed_pb2_grpc, photo_pb2
from photostore.auth import require_service_caller
from photostore.errors import ServiceError, invalid, unavailable

log = logging.getLogger(__name__)

SERVICE_NAME = embed_pb2.DESCRIPTOR.services_by_name["EmbedService"].full_name
# The analyzer's role names (signals.py) as photos.v1.ModelRole.
ROLES = {"labels": embed_pb2.MODEL_ROLE_LABELS, "ocr": embed_pb2.MODEL_ROLE_OCR,
         "sentence": embed_pb2.MODEL_ROLE_SENTENCE}


class EmbedService(embed_pb2_grpc.EmbedServiceServicer):
    """Internal: only the services' key may embed or analyse (a user's key would buy seconds of
    CPU per call); GetModelInfo answers any user."""

    def __init__(self, model: ClipModel, analyzer: ImageAnalyzer | None = None):
        """Without an analyzer (signals disabled) only the CLIP calls work."""
        self._model = model
        self._analyzer = analyzer

    def EmbedText(self, request: embed_pb2.EmbedTextRequest, context: grpc.ServicerContext):
        try:
            require_service_caller("EmbedText")
            texts = list(request.texts)
            _check_count(len(texts), MAX_TEXTS, "texts")
            for i, text in enumerate(texts):
                if not text.strip():
                    raise invalid(f"texts[{i}] is empty", field=f"texts[{i}]")
            if request.encoder == embed_pb2.TEXT_ENCODER_SENTENCE:
                analyzer = self._require_analyzer()
                vectors = self._run(analyzer.embed_texts, texts)
                return embed_pb2.EmbedTextResponse(embeddings=_embeddings(vectors), model=analyzer.model_id)
            vectors = self._run(self._model.embed_texts, texts)
            return embed_pb2.EmbedTextResponse(embeddings=_embeddings(vectors), model=self._model.model_id)
        except ServiceError as e:
            e.abort(context)

    def EmbedImages(self, request: embed_pb2.EmbedImagesRequest, context: grpc.ServicerContext):
        try:
            require_service_caller("EmbedImages")
            images = _images(request)
            vectors = self._run(self._model.embed_images, images)
            return embed_pb2.EmbedImagesResponse(embeddings=_embeddings(vectors), model=self._model.model_id)
        except ServiceError as e:
            e.abort(context)

    def AnalyzeImages(self, request: embed_pb2.AnalyzeImagesRequest, context: grpc.ServicerContext):
        try:
            require_service_caller("AnalyzeImages")
            images = _images(request)
            analyzer = self._require_analyzer()
            analyses = self._run(lambda batch: analyzer.analyze(batch, read_text=not request.skip_text), images)
            return embed_pb2.AnalyzeImagesResponse(model=analyzer.model_id, analyses=[
                embed_pb2.ImageAnalysis(
                    labels=[photo_pb2.Label(text=text, score=score) for text, score in a.labels],
                    ocr_text=a.ocr_text,
                    text_embedding=embed_pb2.Embedding(
                        values=[] if a.text_vector is None else a.text_vector.tolist()))
                for a in analyses])
        except ServiceError as e:
            e.abort(context)

    def GetModelInfo(self, request: embed_pb2.GetModelInfoRequest, context: grpc.ServicerContext):
        model = self._model
        models = [_status(embed_pb2.MODEL_ROLE_CLIP, model.model_id, model, model.dimension)]
        if (analyzer := self._analyzer) is not None:
            # The sentence model's vectors carry the text-vector id (labels, OCR and sentence models).
            models += [_status(ROLES[r.role], analyzer.model_id, r.model, analyzer.sentence.dimension)
                       if r.role == SENTENCE else _status(ROLES[r.role], r.model.model_id, r.model, 0)
                       for r in analyzer.roles if r.role in ROLES]
            # The object detector has no ModelRole: it runs in the OCR stage, so it reports
            # through the OCR entry, ready only when both are.
            if (objects := analyzer.objects) is not None and not objects.ready:
                ocr = next(m for m in models if m.role == embed_pb2.MODEL_ROLE_OCR)
                ocr.ready = False
                ocr.reason = "; ".join(filter(None, [ocr.reason, f"objects model {objects.model_id}: "
                                                                 f"{objects.reason or 'not loaded'}"]))
        return embed_pb2.GetModelInfoResponse(models=models, device=model.device)

    def _require_analyzer(self) -> ImageAnalyzer:
        if self._analyzer is None:
            raise unavailable("labels, OCR and sentence models are disabled (PHOTOSTORE_SIGNALS_ENABLED)",
                              reason="SIGNALS_DISABLED")
        return self._analyzer

    @staticmethod
    def _run(call, inputs):
        try:
            return call(inputs)
        except ModelNotReadyError as e:
            raise unavailable(f"model not ready: {e}", reason="MODEL_NOT_READY") from None
        except ImageDecodeError as e:
            raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, str(e), field=f"images[{e.index}]",
                               reason="IMAGE_UNDECODABLE",
                               metadata={"index": str(e.index), "detail": e.detail}) from None
        except Exception as e:  # noqa: BLE001 - inference failures become INTERNAL with the cause
            log.exception("inference failed")
            raise ServiceError(grpc.StatusCode.INTERNAL, f"inference failed: {e}") from e


def _images(request) -> list[bytes]:
    images = list(request.images)
    _check_count(len(images), MAX_IMAGES, "images")
    return images


def _status(role: int, model_id: str, model: InferenceModel, dimension: int) -> embed_pb2.ModelStatus:
    return embed_pb2.ModelStatus(role=role, model=model_id, ready=model.ready,
                                 reason="" if model.ready else model.reason, dimension=dimension,
                                 image_size=model.image_size)


def _check_count(count: int, limit: int, field: str) -> None:
    if not 1 <= count <= limit:
        raise invalid(f"{field} must hold 1 to {limit} items, got {count}", field=field)


def _embeddings(vectors) -> list[embed_pb2.Embedding]:
    return [embed_pb2.Embedding(values=v.tolist()) for v in vectors]
