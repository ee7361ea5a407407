"""CLIP in torch: the exact fp32 backend, and the text tower cut at the end token that
embed_svc.export exports. Imported only when a torch backend runs or an export is made."""
from __future__ import annotations

from typing import Any

import numpy as np
import open_clip
import torch
from open_clip.transformer import text_global_pool
from PIL import Image

from embed_svc.runtime import torch_with_threads
from photostore.settings import Settings


class TextUntilEot(torch.nn.Module):
    """encode_text of tokens cut after the batch's last end token (any length up to the context):
    attention is causal, so the vectors are those of all context positions."""

    def __init__(self, model: Any):
        super().__init__()
        self.model = model
        self.cut = isinstance(model, open_clip.CLIP) and model.attn_mask is not None

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        model = self.model
        if not self.cut:  # other text towers get the full context
            return model.encode_text(tokens)
        length = tokens.shape[1]
        cast_dtype = model.transformer.get_cast_dtype()
        x = model.token_embedding(tokens).to(cast_dtype) + model.positional_embedding[:length].to(cast_dtype)
        x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask[:length, :length]))
        x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
        if model.text_projection is None:
            return x
        if isinstance(model.text_projection, torch.nn.Linear):
            return model.text_projection(x)
        return x @ model.text_projection


class TorchClip:
    """open_clip in torch fp32, the encoder interface of embed_svc.model.ClipEncoder."""

    def __init__(self, name: str, pretrained: str, settings: Settings):
        torch_with_threads(settings)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        model, _, self._preprocess = open_clip.create_model_and_transforms(
            name, pretrained=pretrained, device=self.device)
        self._model = model.eval()
        self._text = TextUntilEot(model)
        self._tokenizer = open_clip.get_tokenizer(name)

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return self._preprocess(image).numpy()

    def tokenize(self, text: str) -> np.ndarray:
        """Token ids up to and with the end token (the highest id) where the tower can cut there."""
        tokens = self._tokenizer([text])[0].numpy()
        return tokens[: tokens.argmax() + 1] if self._text.cut else tokens

    @torch.inference_mode()
    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        return self._model.encode_image(torch.from_numpy(pixels).to(self.device)).float().cpu().numpy()

    @torch.inference_mode()
    def encode_texts(self, tokens: np.ndarray) -> np.ndarray:
        return self._text(torch.from_numpy(tokens).to(self.device)).float().cpu().numpy()
