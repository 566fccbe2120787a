import os

import pytest

# Keep test runs reproducible and within the 2-core budget.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture
def tmp_run(tmp_path):
    return tmp_path / "run"
