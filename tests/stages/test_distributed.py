"""`tunelab train` under a multi-process launcher: two CPU processes talking over gloo train the
same model as one process does, and only process 0 writes the run directory.

The launch is the one a user types, `torchrun --nproc_per_node 2 -m tunelab.cli train CONFIG`
(torchrun run as `python -m torch.distributed.run` so the test's interpreter is used). On CPU,
`accelerate launch --multi_gpu --num_processes 2 -m tunelab.cli ...` starts the same torchrun
workers; `accelerate launch --cpu --num_processes 2` does not: accelerate 1.15 starts ONE process
for it on a single machine (docs/scaling.md).

Why the loss curves must match: one process with batch 8 and two processes with batch 4 each
see the same 8 examples at every optimizer step, in the same order.
- The Trainer's RandomSampler is replaced by accelerate's SeedableRandomSampler, seeded with
  data_seed (train.seed) in every process, so every process draws the same permutation of the
  training set as the single process does.
- accelerate's BatchSamplerShard (split_batches=False, even_batches=True) cuts that permutation
  into per-process batches of 4 and deals them out in turn: at step k process 0 gets positions
  8k..8k+3 and process 1 gets 8k+4..8k+7, together exactly the single process's batch k. The
  run is 32 examples = 4 full steps, so no batch is padded by repeating examples.
- The loss is a mean over assistant tokens of the whole global batch in both cases: transformers
  counts the loss tokens across processes (average_tokens_across_devices) and DDP averages the
  gradients over processes, so the gradient is the same, up to float summation order.
- There is no dropout (LlamaConfig's attention_dropout is 0), so no random numbers are drawn
  in forward passes, and the logged `loss` is gathered from both processes.
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tunelab.config import load_config
from tunelab.train.run import run

ASSETS = Path(__file__).resolve().parents[1] / "assets"
STEPS = 4
GLOBAL_BATCH = 8

# Loaded as `sitecustomize` by every Python process of the launch (PYTHONPATH). In a launched
# worker (RANK set) it
# - records each file the process opens for writing, renames or removes under the run directory
#   from Python (audit hooks), appends to files process 0 created (metrics.jsonl) included;
# - gives process 0 umask 022 and the others 077, so a file without group and other read bits
#   was created by a process other than 0 even when native code wrote it (torch.save's C++
#   writer, the tokenizers library). safetensors files are the exception, 0600 whoever writes
#   them; they are only ever written by save_pretrained, whose config.json goes through Python
#   and so would show up in the write log.
WRITE_PROBE = '''
import os, sys
_rank, _watch = os.environ.get("RANK"), os.environ.get("TUNELAB_TEST_WATCH")
if _rank is not None and _watch:
    os.umask(0o022 if _rank == "0" else 0o077)
    _log = open(os.path.join(os.environ["TUNELAB_TEST_WRITES"], "rank" + _rank + ".log"), "a", buffering=1)
    _writes = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC

    def _record(event, path):
        if isinstance(path, (str, bytes, os.PathLike)):
            path = os.path.abspath(os.fsdecode(path))
            if path.startswith(_watch):
                _log.write(event + " " + os.path.relpath(path, _watch) + "\\n")

    def _hook(event, args):
        if event == "open":
            path, mode, flags = args
            if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (mode is None and flags & _writes):
                _record("write", path)
        elif event in ("os.rename", "os.remove", "shutil.rmtree"):
            _record(event, args[0])
            if event == "os.rename":
                _record(event, args[1])

    sys.addaudithook(_hook)
'''


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A seeded 2-block Llama (hidden 32, no dropout) with the tests' tiny chat tokenizer."""
    from transformers import AutoTokenizer

    from tiny_models import build_tiny_llama  # Llama has no dropout by default (attention_dropout 0.0)
    tokenizer = AutoTokenizer.from_pretrained(ASSETS / "tiny-chat-tokenizer")
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), tokenizer, hidden=32, intermediate=64, layers=2,
                            heads=4, max_positions=128, tied=False)


def write_config(directory: Path, model: Path) -> Path:
    """32 chat records of varied lengths (so padding and token counts differ across batches and
    processes) and a full fine-tune of exactly 4 steps at a learning rate that moves the loss."""
    records = [{"messages": [{"role": "user", "content": f"count to {i} please" + " now" * (i % 5)},
                             {"role": "assistant", "content": " ".join(str(j) for j in range(i % 7 + 1))}]}
               for i in range(STEPS * GLOBAL_BATCH)]
    data = directory / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    config = {"train": {"model": str(model), "data": str(data), "method": "full", "max_steps": STEPS,
                        "lr": 1e-3, "warmup": 0, "scheduler": "constant", "logging_steps": 1, "max_length": 64,
                        "seed": 0, "early_stopping_patience": None, "tracking": {"backend": "none"},
                        "memory_limit_gb": 20}}
    path = directory / "config.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
    return path


def step_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "loss" in r]


def launch_two_processes(config: Path, run_dir: Path, probe_dir: Path) -> subprocess.CompletedProcess:
    (probe_dir / "sitecustomize.py").write_text(WRITE_PROBE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(probe_dir), os.environ.get("PYTHONPATH", "")]),
           "TUNELAB_TEST_WATCH": str(run_dir.resolve()), "TUNELAB_TEST_WRITES": str(probe_dir),
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "tunelab.cli", "train", str(config), f"train.output_dir={run_dir}",
               f"train.batch_size={GLOBAL_BATCH // 2}"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=480)


def test_two_processes_match_one_and_only_process_zero_writes(tiny_model, tmp_path):
    config = write_config(tmp_path, tiny_model)
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()
    two = tmp_path / "two-processes"
    launched = launch_two_processes(config, two, probe_dir)
    assert launched.returncode == 0, launched.stderr[-4000:]

    single = tmp_path / "one-process"
    run(load_config(config, [f"train.output_dir={single}", f"train.batch_size={GLOBAL_BATCH}"]))

    # the same loss curve: every step logged once (process 1 writes no rows), equal within float noise
    one_rows, two_rows = step_rows(single), step_rows(two)
    assert [r["step"] for r in two_rows] == [r["step"] for r in one_rows] == list(range(1, STEPS + 1))
    losses_one, losses_two = [r["loss"] for r in one_rows], [r["loss"] for r in two_rows]
    assert losses_two == pytest.approx(losses_one, rel=1e-4)
    assert losses_one[-1] < losses_one[0]  # it trained: equal curves of a frozen model would prove nothing
    # the records differ in length, so equal token counts at every step show equal batch composition
    assert [r["num_input_tokens_seen"] for r in two_rows] == [r["num_input_tokens_seen"] for r in one_rows]
    assert [r["grad_norm"] for r in two_rows] == pytest.approx([r["grad_norm"] for r in one_rows], rel=1e-3)

    # the same trained weights
    from safetensors.torch import load_file
    weights_one, weights_two = load_file(single / "model.safetensors"), load_file(two / "model.safetensors")
    assert weights_one.keys() == weights_two.keys()
    for name in weights_one:
        torch.testing.assert_close(weights_two[name], weights_one[name], rtol=0, atol=1e-4, msg=name)

    # one summary printed, by process 0 (the others return quietly after the run directory is complete)
    assert launched.stdout.count("trained (sft)") == 1

    # the run directory is complete and was written by process 0 alone; process 1 wrote only its
    # own RNG state into each checkpoint, as the Trainer has every process do for resuming
    for name in ("config.yaml", "manifest.json", "README.md", "metrics.jsonl", "model.safetensors"):
        assert (two / name).is_file(), name
    checkpoint = two / "checkpoints" / f"checkpoint-{STEPS}"
    marker = checkpoint / "tunelab-complete.json"
    assert json.loads(marker.read_text())["step"] == STEPS
    own_rng = {f"checkpoints/checkpoint-{STEPS}/rng_state_1.pth"}
    created_elsewhere = {str(p.relative_to(two)) for p in two.rglob("*") if p.is_file() and p.suffix != ".safetensors"
                         and not p.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH)}
    assert created_elsewhere == own_rng
    writes_one = (probe_dir / "rank1.log").read_text().split("\n") if (probe_dir / "rank1.log").exists() else []
    assert {line.split(" ", 1)[1] for line in writes_one if line} <= own_rng
    writes_zero = {line.split(" ", 1)[1] for line in (probe_dir / "rank0.log").read_text().splitlines()}
    assert {"metrics.jsonl", "manifest.json", "config.yaml"} <= writes_zero  # the probe did watch
    # the marker says complete only once every process had written its part (callbacks.CompleteCheckpoints)
    assert marker.stat().st_mtime_ns >= (checkpoint / "rng_state_1.pth").stat().st_mtime_ns
