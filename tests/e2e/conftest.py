"""The end-to-end suite's stack: started once per module, with NO weights at first."""
import os

import pytest

from tests.stack import Stack


@pytest.fixture(scope="module")
def stack_env() -> dict[str, str]:
    """Extra PHOTOSTORE_* settings of a module's stack (a module overrides this fixture)."""
    return {}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_clip, stack_env):
    """Starts with NO CLIP weights at the configured path, as on a machine that reaches no hub."""
    workdir = tmp_path_factory.mktemp("stack")
    s = Stack(workdir, workdir / "weights" / "tiny.pt", tiny_clip, env=stack_env)
    s.checkpoint_path.parent.mkdir()
    s.start_all()
    yield s
    s.stop_all()
    if os.environ.get("PHOTOSTORE_TEST_KEEP_LOGS"):
        print(s.logs())
