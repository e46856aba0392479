"""Helpers shared by several test files (import with `from helpers import ...`)."""

import importlib.util
import os
import signal
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EVAL_FIXTURES = Path(__file__).parent / "fixtures" / "eval"


def load_script(name: str):
    """Import eval/<name>.py by path: putting eval/ on sys.path would shadow stdlib `math`."""
    spec = importlib.util.spec_from_file_location(f"eval_{name}", ROOT / "eval" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def launch_distributed(cmd: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    """Run a 2-process CPU launch (in its own process group, killed as a whole on timeout).

    No relaunch: a rank that aborts at exit ("terminate called without an active exception", a gloo
    worker thread caught by the interpreter's teardown) was the reason for one, and the entry scripts
    now end launched processes without that teardown (balora.cli.lifecycle.exit_launched_process).
    """
    return _run_in_own_group(cmd, env, cwd)


def _run_in_own_group(
    cmd: list[str], env: dict, cwd: Path, timeout: int = 900
) -> subprocess.CompletedProcess:
    """subprocess.run in a new process group; on timeout the whole group is killed (launcher and ranks).

    A plain timeout kills only the launcher and leaves the ranks running, holding the rendezvous port
    and CPU. The usual cause of a hang here: a stale lock of a torch C++ extension build (DeepSpeed's
    CPU ops) left by a killed process, which every later build waits on forever.
    """
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        locks = sorted(str(p) for p in _torch_extension_locks())
        raise AssertionError(
            f"{' '.join(cmd[:6])} ... did not finish in {timeout} s; all its processes were killed."
            + (f" Stale extension-build locks (delete them if no build is running): {locks}" if locks else "")
        ) from None
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def _torch_extension_locks() -> list[Path]:
    """Lock files of torch C++ extension builds (TORCH_EXTENSIONS_DIR or ~/.cache/torch_extensions)."""
    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR", Path.home() / ".cache" / "torch_extensions"))
    return list(root.glob("*/*/lock")) if root.is_dir() else []


def random_response_dataset(n=8, length=16, prompt=6, seed=0):
    """Equal-length random token sequences whose last length-prompt tokens are the response (labels
    -100 before): micro-batch means are exchangeable, so accumulation and batching tests compare exactly."""
    import torch
    from datasets import Dataset

    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        ids = torch.randint(4, 500, (length,), generator=g).tolist()
        rows.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return Dataset.from_list(rows)


def random_classification_dataset(n=8, length=12, seed=2):
    """Random token rows of one length, unpadded (full attention mask), labels alternating 0 and 1."""
    import torch
    from datasets import Dataset

    ids = torch.randint(1000, 5000, (n, length), generator=torch.Generator().manual_seed(seed))
    return Dataset.from_list(
        [
            {"input_ids": row.tolist(), "attention_mask": [1] * length, "labels": i % 2}
            for i, row in enumerate(ids)
        ]
    )


# Deterministic CPU training for exact comparisons: plain SGD at a constant learning rate, no warmup or
# weight decay, no reporting integrations, checkpoints or data-loader workers.
SGD_CPU_RUN = dict(
    learning_rate=1.0,
    optim="sgd",
    lr_scheduler_type="constant",
    warmup_steps=0,
    weight_decay=0.0,
    report_to="none",
    use_cpu=True,
    save_strategy="no",
    seed=0,
    disable_tqdm=True,
    dataloader_num_workers=0,
)


def sgd_cpu_args(tmp_path, args_class=None, **overrides):
    """`args_class` (default BALoRATrainingArguments) for a SGD_CPU_RUN writing to tmp_path, with overrides."""
    if args_class is None:
        from balora.trainer import BALoRATrainingArguments as args_class

    return args_class(output_dir=str(tmp_path), **{**SGD_CPU_RUN, **overrides})


def check_non_finite_shards(rank: int, world: int, init_file: str, result_dir: str) -> None:
    """One of two gloo processes (tests/test_lifecycle.py): only rank 1's parameter shard is NaN (as under
    ZeRO-3); each records what its StopOnNonFinite did. Here, not in the test file, so that the spawned
    processes import only this module and the lifecycle."""
    import torch

    from balora.cli import lifecycle

    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
    )
    model = torch.nn.Linear(2, 2)
    if rank == 1:
        with torch.no_grad():
            model.weight[0, 0] = float("nan")
    state = type("State", (), {"global_step": 3})()
    args = type("Args", (), {"learning_rate": 1e-3})()
    try:
        lifecycle.StopOnNonFinite(model).on_step_end(args, state, None)
        outcome = "went on"
    except lifecycle.TrainingDiverged as error:
        outcome = str(error)
    Path(result_dir, f"rank{rank}").write_text(outcome)
    torch.distributed.destroy_process_group()
