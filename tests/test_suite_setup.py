"""The suite's own set-up (tests/conftest.py)."""

import os

import torch
from conftest import share_cores_among_workers


def test_each_xdist_worker_takes_its_share_of_the_cores_not_the_controllers():
    """The controller's value, inherited by the workers, used to stay: two workers on two cores ran two
    threads each, and the rehearsal tests' stages ran as subprocesses instead of forks."""
    controller: dict[str, str] = {}
    share_cores_among_workers(controller, cores=2)
    assert controller["OMP_NUM_THREADS"] == "2"
    worker = {**controller, "PYTEST_XDIST_WORKER_COUNT": "2"}
    share_cores_among_workers(worker, cores=2)
    assert worker["OMP_NUM_THREADS"] == "1"
    users = {"OMP_NUM_THREADS": "3", "PYTEST_XDIST_WORKER_COUNT": "2"}
    share_cores_among_workers(users, cores=2)
    assert users["OMP_NUM_THREADS"] == "3"  # set by the user: kept
    # And this process runs with what its environment says.
    assert torch.get_num_threads() == int(os.environ["OMP_NUM_THREADS"])
    if os.environ.get("BALORA_TEST_THREADS_SET") == "1" and "PYTEST_XDIST_WORKER_COUNT" in os.environ:
        cores = os.cpu_count() or 1
        assert os.environ["OMP_NUM_THREADS"] == str(
            max(1, cores // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
        )
