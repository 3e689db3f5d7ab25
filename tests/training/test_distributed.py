"""Several processes on this CPU (torchrun, gloo): training is the same as one process with the same global batch,
and `aullava predict` split over ranks writes the same table as one process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

import aullava

TESTS = Path(__file__).parents[1]
pytestmark = pytest.mark.distributed


def torchrun(args: list[str], processes: int = 2, cwd: Path = TESTS, code: int = 0) -> subprocess.CompletedProcess:
    """`torchrun --standalone` (a free port per launch) with this checkout's aullava and the tests' helpers."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(aullava.__file__).parents[1]), str(TESTS)]),
           "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *args]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == code, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def ranks(record: Path) -> list[dict]:
    return [json.loads((record / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_two_process_training_equals_one_process_with_the_global_batch(char_tokenizer_dir, tmp_path):
    from ddp_train_worker import recipe

    from aullava.training.recipe import train

    # 2 processes × 4 items = the global batch of 8; 24 items → 3 steps per epoch, 6 steps = 2 epochs
    worker = ["ddp_train_worker.py", "--tokenizer", str(char_tokenizer_dir), "--max-steps", "6", "--batch-size", "4",
              "--save-steps", "3"]
    torchrun(worker + ["--out", str(tmp_path / "ddp"), "--record", str(tmp_path / "rec")])
    rank0, rank1 = ranks(tmp_path / "rec")
    assert rank0["world_size"] == rank1["world_size"] == 2 and rank0["global_step"] == 6

    # both ranks hold the same weights at the end (DDP averaged every gradient)
    w0, w1 = (load_file(str(tmp_path / "rec" / f"weights-rank{r}.safetensors")) for r in (0, 1))
    assert w0.keys() == w1.keys() and all(bool((w0[k] == w1[k]).all()) for k in w0)

    # each of the 24 items is loaded exactly once per epoch, by one of the two ranks
    for epoch in (0, 1):
        items = rank0["seen"][12 * epoch:12 * (epoch + 1)] + rank1["seen"][12 * epoch:12 * (epoch + 1)]
        assert sorted(items) == list(range(24)), (epoch, items)

    # checkpoints and the final model are written once, by rank 0
    assert rank0["saves"] == ["checkpoint-3", "checkpoint-6", "ddp"] and rank1["saves"] == []

    # one process with batch 8: the same loss at every step and the same weights. The loss normaliser is the global
    # batch's (weighted) answer-token count, so only float32 summation order differs (all-reduce of two partial
    # gradients vs one sum): observed ≤ 5e-7 on the loss and ≤ 2e-6 on any weight. Adam moves each weight by ~1e-3
    # per step and the loss falls by ~0.1-0.4 per step, so the tolerances below (1e-5, 2e-5) are far below any
    # difference a wrong batch, a wrong normaliser or an unsynchronised rank would make.
    single = train(recipe(str(char_tokenizer_dir), str(tmp_path / "single"), 6, 8, 100))
    losses = {str(e["step"]): e["loss"] for e in single.state.log_history if "loss" in e}
    assert losses.keys() == rank0["losses"].keys()
    for step, loss in losses.items():
        assert rank0["losses"][step] == pytest.approx(loss, rel=1e-5, abs=0), step
    assert losses["1"] - losses["6"] > 0.5  # the curve moves far more than the tolerance
    weights = {n: p.detach() for n, p in single.model.named_parameters() if p.requires_grad}
    assert weights.keys() == w0.keys()
    assert max(float((weights[k] - w0[k]).abs().max()) for k in w0) < 2e-5

    # resume: a 2-process run restarted from checkpoint-3 trains steps 4-6 only (epoch 2's items) and ends with
    # exactly the weights of the uninterrupted run
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(tmp_path / "ddp" / "checkpoint-3", resumed / "checkpoint-3")
    torchrun(worker + ["--out", str(resumed), "--record", str(tmp_path / "rec-resumed")])
    again0, again1 = ranks(tmp_path / "rec-resumed")
    assert again0["global_step"] == 6 and again0["saves"] == ["checkpoint-6", "resumed"] and again1["saves"] == []
    assert again0["seen"] == rank0["seen"][12:] and again1["seen"] == rank1["seen"][12:]
    assert again0["losses"] == rank0["losses"]  # steps 1-3 restored from the checkpoint, 4-6 trained again
    w_resumed = load_file(str(tmp_path / "rec-resumed" / "weights-rank0.safetensors"))
    assert all(bool((w_resumed[k] == w0[k]).all()) for k in w0)


@pytest.fixture(scope="module")
def faces_folder(tmp_path_factory, astronaut_path):
    """Five inputs, one of them not an image: rank 0 takes the first three, rank 1 the last two."""
    from PIL import Image, ImageOps

    d = tmp_path_factory.mktemp("faces")
    face = Image.open(astronaut_path).convert("RGB")
    face.save(d / "a.png")
    ImageOps.mirror(face).save(d / "b.png")
    (d / "c.jpg").write_text("not an image\n")
    face.rotate(8).save(d / "d.png")
    face.resize((300, 300)).save(d / "e.png")
    return d


def test_two_process_predict_writes_the_one_process_table(char_tokenizer_dir, faces_folder, tmp_path):
    import pandas as pd
    import torch

    from aullava.cli import main
    from aullava.model.modeling import AuLlavaModel
    from conftest import tiny_model_config

    torch.manual_seed(0)
    model = tmp_path / "model"
    AuLlavaModel(tiny_model_config(char_tokenizer_dir, vision="clip", llm="llama")).save_pretrained(model)
    common = ["predict", str(faces_folder), "--model", str(model), "-q"]
    assert main(common + ["--out", str(tmp_path / "one.csv")]) == 1  # c.jpg fails, the others are predicted
    one = pd.read_csv(tmp_path / "one.csv")
    assert list(one["file"].map(lambda f: Path(f).name)) == ["a.png", "b.png", "c.jpg", "d.png", "e.png"]

    # rank 0 gathers every rank's results and writes one table: the same bytes as one process
    result = torchrun(["-m", "aullava.cli"] + common + ["--out", str(tmp_path / "two.csv")], code=1)
    assert (tmp_path / "two.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()
    assert "1 of 5 inputs failed" in result.stderr

    # --out FOLDER/: one shard per rank, joined by rank 0 into predictions.csv; merge-shards joins them again
    shards = tmp_path / "shards"
    torchrun(["-m", "aullava.cli"] + common + ["--out", f"{shards}/"], code=1)
    assert sorted(p.name for p in shards.iterdir()) == ["part-00000-of-00002.csv", "part-00001-of-00002.csv",
                                                        "predictions.csv"]
    for part, names in (("00000", ["a.png", "b.png", "c.jpg"]), ("00001", ["d.png", "e.png"])):
        shard = pd.read_csv(shards / f"part-{part}-of-00002.csv")
        assert list(shard["file"].map(lambda f: Path(f).name)) == names
    pd.testing.assert_frame_equal(pd.read_csv(shards / "predictions.csv"), one)
    assert main(["merge-shards", str(shards), "--out", str(tmp_path / "merged.csv")]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "merged.csv"), one)
    assert main(["merge-shards", str(shards), "--out", str(tmp_path / "merged.parquet")]) == 0  # format from the name
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "merged.parquet"), one)
    assert main(["merge-shards", str(shards), "--out", str(tmp_path / "merged.xlsx")]) == 2
    assert not (tmp_path / "merged.xlsx").exists()
    (shards / "part-00001-of-00002.csv").unlink()
    assert main(["merge-shards", str(shards)]) == 2  # a missing shard is named, not silently dropped


@pytest.mark.parametrize("path", sorted((TESTS.parent / "configs" / "accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_accelerate_configs_are_valid(path):
    """Each example parses as an accelerate config, and every FSDP / DeepSpeed key is one `accelerate launch` knows
    (the launcher would otherwise ignore a misspelt key without a word)."""
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.commands.launch import launch_command_parser

    config = ClusterConfig.from_yaml_file(str(path))
    known = {action.dest for action in launch_command_parser()._actions}
    nested = {**(config.fsdp_config or {}), **(config.deepspeed_config or {})}
    assert set(nested) <= known, set(nested) - known
    assert config.num_processes > 1 and config.mixed_precision == "bf16"
