"""photos.v1.EmbedService: CLIP text and image embeddings over gRPC."""
from __future__ import annotations

import logging

import grpc

from embed_svc.model import ClipModel, ImageDecodeError, ModelNotReadyError
from photos.v1 import embed_pb2, embed_pb2_grpc
from photostore.errors import ServiceError, invalid, unavailable

log = logging.getLogger(__name__)

SERVICE_NAME = embed_pb2.DESCRIPTOR.services_by_name["EmbedService"].full_name
MAX_TEXTS = 256
MAX_IMAGES = 64


class EmbedService(embed_pb2_grpc.EmbedServiceServicer):
    def __init__(self, model: ClipModel):
        self._model = model

    def EmbedText(self, request: embed_pb2.EmbedTextRequest, context: grpc.ServicerContext):
        try:
            texts = list(request.texts)
            _check_count(len(texts), MAX_TEXTS, "texts")
            for i, text in enumerate(texts):
                if not text.strip():
                    raise invalid(f"texts[{i}] is empty", field=f"texts[{i}]")
            vectors = self._embed(self._model.embed_texts, texts)
            return embed_pb2.EmbedTextResponse(embeddings=_embeddings(vectors), model=self._model.model_id)
        except ServiceError as e:
            e.abort(context)

    def EmbedImages(self, request: embed_pb2.EmbedImagesRequest, context: grpc.ServicerContext):
        try:
            images = list(request.images)
            _check_count(len(images), MAX_IMAGES, "images")
            try:
                vectors = self._embed(self._model.embed_images, images)
            except ImageDecodeError as e:
                raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, str(e), field=f"images[{e.index}]",
                                   reason="IMAGE_UNDECODABLE",
                                   metadata={"index": str(e.index), "detail": e.detail}) from None
            return embed_pb2.EmbedImagesResponse(embeddings=_embeddings(vectors), model=self._model.model_id)
        except ServiceError as e:
            e.abort(context)

    def GetModelInfo(self, request: embed_pb2.GetModelInfoRequest, context: grpc.ServicerContext):
        model = self._model
        return embed_pb2.GetModelInfoResponse(
            model=model.model_id, dimension=model.dimension, ready=model.ready,
            reason="" if model.ready else model.reason, device=model.device)

    def _embed(self, embed, inputs):
        try:
            return embed(inputs)
        except ModelNotReadyError as e:
            raise unavailable(f"model not ready: {e}", reason="MODEL_NOT_READY") from None
        except ImageDecodeError:
            raise
        except Exception as e:  # noqa: BLE001 - inference failures become INTERNAL with the cause
            log.exception("embedding failed")
            raise ServiceError(grpc.StatusCode.INTERNAL, f"embedding failed: {e}") from e


def _check_count(count: int, limit: int, field: str) -> None:
    if not 1 <= count <= limit:
        raise invalid(f"{field} must hold 1 to {limit} items, got {count}", field=field)


def _embeddings(vectors) -> list[embed_pb2.Embedding]:
    return [embed_pb2.Embedding(values=v.tolist()) for v in vectors]
