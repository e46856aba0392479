"""Shared test set-up: offline hub, few threads, and the optional benchmark data folder ($BALORA_DATA_DIR)."""

import os
from pathlib import Path

# Before any transformers/datasets import: a failed hub download costs ~30 s here.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def share_cores_among_workers(environ, cores: int) -> None:
    """Set OMP_NUM_THREADS to this process's share of the cores, for its torch and the scripts it starts:
    under pytest-xdist (scripts/test.sh: -n) the workers share the cores, so that two workers on two cores
    do not each run two threads (nor fall back from the forked rehearsal stages to subprocesses, which a
    BLAS thread pool started at import forces). The xdist controller imports this file too, before it
    starts the workers, which inherit its environment: the value set here is marked as ours, so each worker
    replaces it with its own share. A value the user set is kept."""
    workers = environ.get("PYTEST_XDIST_WORKER_COUNT")
    share = max(1, cores // int(workers)) if workers else min(2, cores)
    if "OMP_NUM_THREADS" not in environ or environ.get("BALORA_TEST_THREADS_SET") == "1":
        environ.update(OMP_NUM_THREADS=str(share), BALORA_TEST_THREADS_SET="1")


share_cores_among_workers(os.environ, os.cpu_count() or 1)

import pytest  # noqa: E402
import torch  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
# The benchmark data folder (scripts/fetch_data.py): $BALORA_DATA_DIR, else the verified read-only copy
# that CI keeps beside the checkout, else data/. Set here so the scripts the tests start read the same one.
_CI_DATA = REPO_ROOT.parent / "shared" / "data"
if not os.environ.get("BALORA_DATA_DIR") and _CI_DATA.is_dir():
    os.environ["BALORA_DATA_DIR"] = str(_CI_DATA)
DATA_DIR = Path(os.environ.get("BALORA_DATA_DIR") or "data").expanduser()
DATA_DIR = DATA_DIR if DATA_DIR.is_absolute() else REPO_ROOT / DATA_DIR

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The benchmark data folder (real GLUE, GSM8K, MATH, MBPP, MT-Bench files); tests that need it skip
    cleanly when a file of data/SHA256SUMS is missing there."""
    manifest = (REPO_ROOT / "data" / "SHA256SUMS").read_text().split()[1::2]
    missing = [rel for rel in manifest if not (DATA_DIR / rel).is_file()]
    if missing:
        pytest.skip(
            f"benchmark data not found in {DATA_DIR} ({missing[0]} and {len(missing) - 1} more missing; "
            "python scripts/fetch_data.py fills it, or set BALORA_DATA_DIR)"
        )
    return DATA_DIR


@pytest.fixture(autouse=True)
def _seed_global_rngs():
    """Every test starts from the same global RNG state, so random adapter inits (LoHa, LoRA's A, ...)
    do not depend on which tests ran before it: a flaky threshold in CI stop 6 came from that."""
    import random

    import numpy

    random.seed(0)
    numpy.random.seed(0)
    torch.manual_seed(0)


# The costliest modules, costliest first (`bash scripts/test.sh --durations=0`, summed per module). scripts/
# test.sh hands whole modules to the pytest-xdist workers in collection order (--no-loadscope-reorder:
# xdist's default order, most tests first, left the long modules of few tests to the end, one worker running
# them while the others idled); these go first, so the many short modules fill the gaps at the end.
COSTLIEST_MODULES_FIRST = (
    "test_train_nlg.py", "test_runner.py", "test_paper_path.py", "test_glue_run.py", "test_generation.py",
    "test_studies.py", "test_eval_gsm8k_nll.py", "test_benchmarks.py", "test_evalplus_agreement.py",
    "test_sandbox_hostile.py", "test_lifecycle.py", "test_eval_code.py", "test_nlu_methods.py",
)  # fmt: skip


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(COSTLIEST_MODULES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each module's order is kept
