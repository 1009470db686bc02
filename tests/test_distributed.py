"""Distributed training as torchrun runs it: two CPU processes, gloo, DDP; and the helpers behind it."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.model import distributed
from tests.conftest import CT_HEAD

ROOT = Path(__file__).resolve().parents[1]

WORKER = textwrap.dedent(
    """
    import json, sys
    import torch.distributed as dist
    from napari_cycleinr.errors import Cancelled
    from napari_cycleinr.model.config import ModelConfig
    from napari_cycleinr.model.train import train
    from napari_cycleinr.model.train_config import TrainConfig

    out, data = sys.argv[1], sys.argv[2]
    dist.init_process_group("gloo")  # one group for the three runs below; train() then leaves it open
    model = ModelConfig(channels=8, blocks=1, heads=2, decoder_width=16, position_frequencies=2)
    config = TrainConfig(
        steps=8, batch=1, thick_slices=4, crop=24, query_pixels=128, scale_min=1.5, scale_max=3.0,
        validation_every=4, checkpoint_every=2, log_every=4, warmup_steps=2, learning_rate=3e-3,
        model=model, train_data=(data,),
    )
    lines = []
    straight = train(config, out + "/straight", device="cpu", log=lines.append)
    calls = [0]
    def cancel():
        calls[0] += 1
        return calls[0] > 5  # stop before step 5: the last checkpoint is at step 4
    try:
        train(config, out + "/split", device="cpu", log=lines.append, cancel=cancel)
    except Cancelled:
        pass
    resumed = train(config, out + "/split", resume=True, device="cpu", log=lines.append)
    rank = dist.get_rank()
    with open(f"{out}/rank{rank}.json", "w") as handle:
        json.dump({"straight": straight, "resumed": resumed, "lines": lines}, handle)
    dist.barrier()
    dist.destroy_process_group()
    """
)


def test_two_gloo_ranks_train_identical_weights_and_resume_exactly(tmp_path):
    from napari_cycleinr.model.checkpoint import load_model

    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(script), str(tmp_path), str(CT_HEAD)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]

    digests = {run: {r[run]["weights_digest"] for r in ranks} for run in ("straight", "resumed")}
    assert all(len(d) == 1 for d in digests.values())  # both ranks hold the same weights
    for run in ("straight", "resumed"):
        assert all(r[run]["ranks_agree"] and r[run]["world_size"] == 2 for r in ranks)
    assert digests["straight"] == digests["resumed"]  # cancel + resume lands on exactly the same weights
    checkpoint = load_model(tmp_path / "straight" / "last.safetensors")
    assert distributed.weights_digest(checkpoint) in digests["straight"]

    history = json.loads((tmp_path / "straight" / "history.json").read_text())
    assert [h["step"] for h in history] == [0, 4, 8]  # rank 0 alone validates and logs
    assert ranks[0]["straight"]["best_psnr"] == ranks[1]["straight"]["best_psnr"]
    assert any("distributed training on 2 processes" in line for line in ranks[0]["lines"])
    assert ranks[1]["lines"] == []  # other ranks stay quiet
    assert "resuming at step 4" in ranks[0]["lines"]


def test_single_process_needs_no_process_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.from_environment(torch.device("cpu")) is None
    assert distributed.rank_and_world() == (0, 1)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.from_environment(torch.device("cpu")) is None


def test_environment_errors_are_plain(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(CycleINRError, match="torchrun"):
        distributed.rank_and_world()
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(CycleINRError, match="outside"):
        distributed.rank_and_world()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(CycleINRError, match="integer"):
        distributed.rank_and_world()


def test_shards_are_disjoint_and_cover():
    items = list(range(11))
    shards = [distributed.shard(items, r, 3) for r in range(3)]
    assert sorted(sum(shards, [])) == items and shards[0] == [0, 3, 6, 9]
    with pytest.raises(ValueError):
        distributed.shard(items, 3, 3)


def test_weights_digest_sees_any_change(tiny_model):
    before = distributed.weights_digest(tiny_model)
    assert distributed.weights_digest(tiny_model) == before
    with torch.no_grad():
        next(tiny_model.parameters()).view(-1)[0] += 1e-7
    assert distributed.weights_digest(tiny_model) != before
