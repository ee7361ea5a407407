"""The image definition, read with dockerfile-parse (no Docker engine runs here to build it)."""
from __future__ import annotations

import re
import tomllib

import pytest
from dockerfile_parse import DockerfileParser

from tests.deploy.conftest import DOCKERFILE, ROOT

COMPILERS = re.compile(r"\b(gcc|g\+\+|clang|build-essential|make|cmake|python3?-dev)\b")
PINS = re.compile(r"\b(torch|torchvision|open-clip-torch)==[\w.]+")
BAKE_MODEL = ("false", "true")


def parse(bake_model: str) -> DockerfileParser:
    return DockerfileParser(path=str(DOCKERFILE), build_args={"BAKE_MODEL": bake_model})


def stages(parser: DockerfileParser) -> list[tuple[str, str, list[dict]]]:
    """(name, parent image, instructions) of each stage, parents resolved with the build args."""
    result: list[tuple[str, str, list[dict]]] = []
    parents = iter(parser.parent_images)
    for instruction in parser.structure:
        if instruction["instruction"] == "FROM":
            words = instruction["value"].split()
            name = words[2] if len(words) > 2 and words[1].upper() == "AS" else ""
            result.append((name, next(parents), []))
        if result:
            result[-1][2].append(instruction)
    return result


def final_image(parser: DockerfileParser) -> list[dict]:
    """The instructions of the last stage and of the stages it is built FROM, in order."""
    by_name = {name: (parent, body) for name, parent, body in stages(parser)}
    _, parent, body = stages(parser)[-1]
    chain = [body]
    while parent in by_name:
        parent, body = by_name[parent]
        chain.insert(0, body)
    return [instruction for body in chain for instruction in body]


@pytest.mark.parametrize("bake_model", BAKE_MODEL)
def test_multi_stage_with_pinned_bases(bake_model):
    parser = parse(bake_model)
    found = stages(parser)
    names = {name for name, _, _ in found}
    external = [parent for _, parent, _ in found if parent not in names]
    assert len(found) >= 2 and external
    for image in external:
        _, _, tag = image.partition(":")
        assert tag and tag != "latest" and re.match(r"\d+\.\d+\.\d+", tag), image


@pytest.mark.parametrize("bake_model", BAKE_MODEL)
def test_final_image_runs_photostore_as_non_root_without_compilers(bake_model):
    final = final_image(parse(bake_model))
    users = [i["value"] for i in final if i["instruction"] == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    for instruction in final:
        if instruction["instruction"] == "RUN":
            assert not COMPILERS.search(instruction["value"]), instruction["value"]
    [entrypoint] = [i["value"] for i in final if i["instruction"] == "ENTRYPOINT"]
    assert entrypoint.replace(" ", "") == '["photostore"]'
    # The venv is copied in, built elsewhere.
    assert any(i["instruction"] == "COPY" and "--from=builder" in i["value"] for i in final)
    env = " ".join(i["value"] for i in final if i["instruction"] == "ENV")
    assert "PHOTOSTORE_DATA_DIR=/var/lib/photostore" in env
    if bake_model == "true":
        assert "PHOTOSTORE_MODEL_PRETRAINED=/opt/photostore/models/clip.bin" in env


def test_torch_and_open_clip_install_together_at_the_project_pins():
    """One pip command (pip never swaps torch out from under open-clip), the versions of pyproject."""
    declared = {d.split("==")[0]: d for d in tomllib.loads((ROOT / "pyproject.toml").read_text())
                ["project"]["dependencies"] if PINS.fullmatch(d)}
    assert len(declared) == 3
    installs = [i["value"] for _, _, body in stages(parse("false")) for i in body
                if i["instruction"] == "RUN" and "torch==" in i["value"]]
    assert len(installs) == 1
    assert all(pin in installs[0] for pin in declared.values()), installs[0]
    assert set(PINS.findall(installs[0])) == set(declared)


def test_build_context_leaves_out_what_the_image_does_not_need():
    ignored = [line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]

    def excluded(path: str) -> bool:
        parts = path.split("/")
        return any(line in ("/".join(parts[:i]) for i in range(1, len(parts) + 1)) or line == f"**/{parts[-1]}"
                   for line in ignored)

    for path in (".git", ".venv", "tools/node_modules", "tests", ".env"):
        assert excluded(path), path
    for path in ("photostore", "gen", "gateway", "pyproject.toml"):
        assert not excluded(path), path
