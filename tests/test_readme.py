"""The README's shell examples, run as written, in order, against a real `photostore up` on a fresh
data dir, from this clone (its `.venv/bin/photostore`, `.venv/bin/grpcurl`).

Every fenced block tagged `bash`, `sh` or `shell` in README.md is one step; blocks added later are
picked up on their own. What the test adapts, and nothing else:
- A block right after the line `<!-- readme-test: skip -->` is not run: the blocking `make up`
  style commands (the test runs `photostore up` itself before the first block) and `make test`.
- `psk_...` stands for the API key the README told the user to copy: the last key printed so far.
- The stack listens on free ports, not the defaults (a developer's own `make up` may hold them):
  its `PHOTOSTORE_*_PORT` settings are in every block's environment, and each default address in
  a command (`127.0.0.1:7061`, ...) is rewritten to the stack's.
- `~` is a fresh home whose `Pictures` holds a few sample photos and a file that is not one.
- The stack runs the tiny test CLIP without the packaged label/OCR/text models (start-up in
  seconds, as in tests/test_up.py), with no CLIP cut-off (its random scores would pass none).
Each command (a line, or lines joined by `\\`) runs in bash with `set -eo pipefail`, in the
environment the one before left (`export` carries over, as in one terminal), and must exit 0.
"""
from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from photostore.settings import Settings
from tests.photo_samples import SAMPLE_FILES
from tests.test_up import Up, up_env

pytestmark = pytest.mark.timeout(1200)

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SKIP_MARK = "<!-- readme-test: skip -->"
SHELLS = {"bash", "sh", "shell"}
KEY_PLACEHOLDER = "psk_..."
KEY = re.compile(r"\bpsk_[A-Za-z0-9_-]{20,}")
BLOCK_TIMEOUT_S = 600
PICTURES = ("chelsea.png", "rocket.jpg", "astronaut.png", "coffee.png")


@dataclasses.dataclass
class Block:
    line: int  # of its opening fence, 1-based
    text: str
    skip: bool


def shell_blocks(markdown: str) -> list[Block]:
    """The fenced shell blocks, in order, each marked whether SKIP_MARK precedes it."""
    blocks, lines, i = [], markdown.splitlines(), 0
    while i < len(lines):
        fence = re.match(r"^(```+)\s*(\w*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith(fence.group(1)))
        before = next((line.strip() for line in reversed(lines[:i]) if line.strip()), "")
        if fence.group(2) in SHELLS:
            blocks.append(Block(i + 1, "\n".join(lines[i + 1:end]), before == SKIP_MARK))
        i = end + 1
    return blocks


def default_addresses(env: dict[str, str]) -> dict[str, str]:
    """'127.0.0.1:DEFAULT' -> '127.0.0.1:ACTUAL' for every port setting the stack changed."""
    moved = {}
    for name, field in Settings.model_fields.items():
        setting = f"PHOTOSTORE_{name.upper()}"
        if name.endswith("_port") and setting in env and str(field.default) != env[setting]:
            moved[f"127.0.0.1:{field.default}"] = f"127.0.0.1:{env[setting]}"
    return moved


def as_run(command: str, addresses: dict[str, str], key: str | None) -> str:
    for default, actual in addresses.items():
        command = re.sub(re.escape(default) + r"(?!\d)", actual, command)
    if KEY_PLACEHOLDER in command:
        assert key, f"{command!r} uses {KEY_PLACEHOLDER} before any key was printed"
        command = command.replace(KEY_PLACEHOLDER, key)
    return command


def commands(block: Block) -> list[str]:
    """The block's commands: its lines, with `\\` continuations joined; blank lines and comments left out."""
    found, pending = [], ""
    for line in block.text.splitlines():
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        command, pending = pending + line, ""
        if command.strip() and not command.lstrip().startswith("#"):
            found.append(command)
    return found


def run_command(script: str, env: dict[str, str], env_file: Path) -> tuple[subprocess.CompletedProcess, dict]:
    """Runs `script` in bash; returns the result and the environment it ended with."""
    wrapped = f"set -eo pipefail\n{script}\nenv -0 > {env_file}\n"
    result = subprocess.run(["bash", "-c", wrapped], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=BLOCK_TIMEOUT_S)
    after = env
    if result.returncode == 0:
        after = dict(item.split("=", 1) for item in env_file.read_text().split("\0") if "=" in item)
    return result, after


def test_the_readme_blocks_are_found():
    blocks = shell_blocks(README.read_text())
    run = [b for b in blocks if not b.skip]
    assert any("make up" in b.text for b in blocks if b.skip)
    assert any("photostore users add" in b.text for b in run)
    assert any("grpcurl" in b.text for b in run)
    # Every blocking `make up` is marked (an unmarked one would hang the test until its timeout).
    assert not [b.line for b in run if re.search(r"^\s*(\S+=\S+\s+)*make up", b.text, re.M)]


def test_readme_examples_run_as_written(tiny_clip, tmp_path):
    home = tmp_path / "home"
    (home / "Pictures" / "trip").mkdir(parents=True)
    for path in SAMPLE_FILES:
        if path.name in PICTURES:
            shutil.copy(path, home / "Pictures" / ("trip" if path.name == "coffee.png" else "") / path.name)
    (home / "Pictures" / "notes.txt").write_text("not a photo\n")
    # The tiny CLIP's random scores pass no real cut-off: every photo counts, so searches find some.
    env = {**up_env(tmp_path, tiny_clip, PHOTOSTORE_SEARCH_MIN_CLIP="-1",
                           PHOTOSTORE_SEARCH_MIN_PROBABILITY="0"), "HOME": str(home)}
    env.pop("PHOTOSTORE_API_KEY", None)
    addresses = default_addresses(env)
    up = Up(env)
    try:
        up.wait_started()
        key, ran = None, 0
        for block in shell_blocks(README.read_text()):
            if block.skip:
                continue
            for command in commands(block):
                script = as_run(command, addresses, key)
                result, env = run_command(script, env, tmp_path / "command.env")
                assert result.returncode == 0, (
                    f"README block at line {block.line}: exit {result.returncode} of\n{script}\n"
                    f"--- stdout\n{result.stdout[-6000:]}\n--- stderr\n{result.stderr[-6000:]}\n"
                    f"--- photostore up\n{up.output_tail(40)}")
                key = ([key] + KEY.findall(result.stdout))[-1]
                ran += 1
        assert ran >= 10
    finally:
        up.stop()
