"""Fixtures shared by the suites."""
import pytest

from tests.tinyclip import write_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tinyclip"))
