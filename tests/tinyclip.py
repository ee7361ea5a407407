"""A tiny random-weight open_clip checkpoint, loaded through the same path as real weights,
and settings that point the EmbedService at it."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import open_clip
import torch

from photostore.settings import Settings

TINY_MODEL_NAME = "tiny-clip-test"
TINY_EMBED_DIM = 32
TINY_CONFIG = {
    "embed_dim": TINY_EMBED_DIM,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@dataclasses.dataclass(frozen=True)
class TinyClip:
    model_name: str
    config_dir: Path
    checkpoint_path: Path


def write_tiny_checkpoint(directory: Path, seed: int = 0, stem: str = "tiny-clip") -> TinyClip:
    """Writes `<directory>/configs/tiny-clip-test.json` and `<directory>/<stem>.pt` (random weights
    from `seed`), and registers the config with open_clip."""
    directory = Path(directory)
    config_dir = directory / "configs"
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / f"{TINY_MODEL_NAME}.json").write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(config_dir)
    torch.manual_seed(seed)
    model = open_clip.create_model(TINY_MODEL_NAME, pretrained=None)
    checkpoint_path = directory / f"{stem}.pt"
    torch.save(model.state_dict(), checkpoint_path)
    return TinyClip(TINY_MODEL_NAME, config_dir, checkpoint_path)


def tiny_settings(tiny: TinyClip, data_dir: Path, **overrides) -> Settings:
    """Settings for an in-process EmbedService on a free port that loads `tiny`."""
    values = dict(data_dir=data_dir, host="127.0.0.1", embed_port=0, shutdown_grace_seconds=0.5,
                  grpc_max_workers=8, model_name=tiny.model_name, model_config_dir=tiny.config_dir,
                  model_pretrained=str(tiny.checkpoint_path), model_retry_seconds=0.5, torch_threads=1)
    return Settings(**{**values, **overrides})


class ReferenceClip:
    """A checkpoint loaded by open_clip directly: the vectors the services must reproduce."""

    def __init__(self, tiny: TinyClip):
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(
            tiny.model_name, pretrained=str(tiny.checkpoint_path))
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(tiny.model_name)

    @torch.no_grad()
    def images(self, images: list) -> np.ndarray:
        """L2-normalised vectors of PIL images (orientation already applied)."""
        batch = torch.stack([self.preprocess(im.convert("RGB")) for im in images])
        return torch.nn.functional.normalize(self.model.encode_image(batch), dim=-1).numpy()

    @torch.no_grad()
    def texts(self, texts: list[str]) -> np.ndarray:
        return torch.nn.functional.normalize(self.model.encode_text(self.tokenizer(texts)), dim=-1).numpy()
