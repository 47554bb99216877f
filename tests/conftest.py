import os
from pathlib import Path

# Triton kernels run on CPU tensors through the interpreter; this must be set before triton loads.
os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch
from hypothesis import Phase, settings

# The test models are tiny: one thread is as fast as two for them, and it keeps OpenMP from
# spinning against other processes on a small machine.
torch.set_num_threads(1)

# Property tests: no per-example deadline on a shared 2-core machine, a fixed set of examples
# (derandomised, so a run is reproducible). Under mutmut a failing example is not shrunk: the
# first failure already catches the mutant, and shrinking would only run into mutmut's timeout.
settings.register_profile("lite-cpt", deadline=None, max_examples=40, derandomize=True)
settings.register_profile("lite-cpt-mutation", settings.get_profile("lite-cpt"),
                          phases=[Phase.explicit, Phase.generate])

# mutmut runs the tests inside its mutants/ copy of the repository and names the mutant it tests.
UNDER_MUTMUT = "MUTANT_UNDER_TEST" in os.environ or Path.cwd().name == "mutants"
settings.load_profile("lite-cpt-mutation" if UNDER_MUTMUT else "lite-cpt")


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


def pytest_terminal_summary(terminalreporter):
    """The fault-injection figures (tests/test_faults.py), when those tests ran."""
    import sys

    faults = sys.modules.get("tests.faults")
    if faults is None or not (faults.TALLY["kills tried"] or faults.TALLY["corruptions tried"]):
        return
    tally = faults.TALLY
    terminalreporter.write_line(
        f"fault injection: SIGKILLs survived {tally['kills survived']}/{tally['kills tried']}, "
        f"corruptions detected {tally['corruptions detected']}/{tally['corruptions tried']}"
    )
