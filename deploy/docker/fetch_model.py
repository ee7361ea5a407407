"""Bakes open_clip weights into the image (deploy/Dockerfile, build arg BAKE_MODEL=true).

    python fetch_model.py --name ViT-B-32 --pretrained laion2b_s34b_b79k --out /opt/photostore/models/clip.bin

Downloads the weights of a pretrained tag that open_clip knows (Hugging Face hub or URL, through
open_clip.download_pretrained, into a scratch cache), writes them to --out as a torch checkpoint
(a .safetensors download is converted, since the embed service loads --out by path and open_clip
reads a path that does not end in .safetensors with torch.load), loads the result once through
open_clip to prove it fits the architecture, and prints its sha256.

Exit status 1 with one line on stderr when the model or tag is unknown or the download fails.
"""
from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
from pathlib import Path


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fail(message: str) -> int:
    print(f"fetch_model: {message}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="open_clip architecture, e.g. ViT-B-32")
    parser.add_argument("--pretrained", required=True, help="open_clip pretrained tag, e.g. laion2b_s34b_b79k")
    parser.add_argument("--out", required=True, type=Path, help="checkpoint file to write")
    parser.add_argument("--cache-dir", default=None, help="download cache (default: a temporary directory)")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip loading the checkpoint through open_clip after writing it")
    args = parser.parse_args(argv)

    import open_clip  # after argument parsing: --help stays fast

    if args.name not in open_clip.list_models():
        return fail(f"unknown open_clip model {args.name!r}; known: {', '.join(open_clip.list_models())}")
    cfg = open_clip.get_pretrained_cfg(args.name, args.pretrained)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(args.name)
        return fail(f"unknown pretrained tag {args.pretrained!r} for {args.name}; "
                    f"known tags: {', '.join(tags) if tags else '(none)'}")

    with tempfile.TemporaryDirectory(prefix="clip-download-") as scratch:
        try:
            downloaded = open_clip.download_pretrained(cfg, cache_dir=args.cache_dir or scratch)
        except Exception as e:  # noqa: BLE001 - any download failure ends the build with its reason
            return fail(f"cannot download {args.name}/{args.pretrained}: {e}")
        if not downloaded or not Path(downloaded).is_file():
            return fail(f"open_clip returned no file for {args.name}/{args.pretrained} ({cfg})")
        downloaded = Path(downloaded)
        print(f"fetch_model: downloaded {downloaded.name} ({downloaded.stat().st_size} bytes)")

        args.out.parent.mkdir(parents=True, exist_ok=True)
        partial = args.out.with_name(args.out.name + ".partial")
        if downloaded.suffix == ".safetensors":
            import torch
            from safetensors.torch import load_file
            torch.save(load_file(str(downloaded), device="cpu"), partial)
        else:
            shutil.copyfile(downloaded, partial)
        partial.replace(args.out)

    if args.verify:
        try:
            open_clip.create_model(args.name, pretrained=str(args.out), device="cpu")
        except Exception as e:  # noqa: BLE001
            args.out.unlink(missing_ok=True)
            return fail(f"{args.out} does not load as {args.name}: {e}")

    print(f"fetch_model: {args.name}/{args.pretrained} -> {args.out} "
          f"({args.out.stat().st_size} bytes) sha256 {sha256(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
