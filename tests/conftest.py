import os

# Triton kernels run on CPU tensors through the interpreter; this must be set before triton loads.
os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

# The test models are tiny: one thread is as fast as two for them, and it keeps OpenMP from
# spinning against other processes on a small machine.
torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _tiny_cache(tmp_path_factory):
    """One cache of tiny bases for the whole session, never the user's ~/.cache."""
    os.environ["LITE_CPT_CACHE"] = str(tmp_path_factory.mktemp("lite-cpt-cache"))


@pytest.fixture
def private_hf_home(tmp_path, monkeypatch):
    """An empty Hugging Face cache of the test's own, offline (prepared splits land there too)."""
    for name in ("HF_HUB_CACHE", "HF_DATASETS_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
