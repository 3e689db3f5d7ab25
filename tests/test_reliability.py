"""What aullava promises when runs are killed or doubled, files are damaged and users make mistakes.

Each test is one promise, named after it:

Asset cache
  - a first run killed while converting leaves nothing that breaks the next run
  - two first runs at once both succeed
  - AULLAVA_HOME pointing at a file is one clear error
Checkpoints
  - a checkpoint missing adapter/projector tensors, or with a wrong shape, is refused naming directory and key
  - a truncated safetensors file is one clear error, not a SafetensorError traceback
  - a config.json that is not an object is one clear error
  - resume skips a damaged last checkpoint for the previous good one, and says so
Command line (validated before the model is loaded; `error: …` and exit 2, no traceback)
  - --batch-size / --limit / --workers / --fold below 1, --device bogus or cuda without CUDA
  - --out: an existing folder, inside a file, an unwritable place, an unknown extension
  - eval --fold 0 is refused, not ignored
  - an empty folder is one clear message
Eval specs and predictions
  - empty / malformed YAML; unknown keys named with the closest valid name
  - out-of-range or non-numeric predictions are refused naming file, row and column
  - subjects written `nan` are refused
Inputs and downloads
  - a FIFO among the images does not hang predict
  - a hub id is refused unless AULLAVA_ALLOW_DOWNLOAD=1
Noise
  - a normal predict prints no third-party log lines or warnings
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")


# ----------------------------------------------------------------------------------------------- asset cache

def write_tiny_gguf(path: Path) -> Path:
    """A real (tiny) llama GGUF with a SentencePiece-style vocabulary, written with the `gguf` package: the same
    conversion path as Gemma's, in a fraction of a second."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    vocab, hidden, ffn, heads = 32, 16, 32, 2
    writer.add_context_length(64)
    writer.add_embedding_length(hidden)
    writer.add_block_count(1)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads)
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(vocab)
    writer.add_tokenizer_model("llama")
    tokens = ["<unk>", "<s>", "</s>"] + [chr(ord("a") + i) for i in range(26)] + ["▁", "0", "1"]
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * vocab)
    writer.add_token_types([2, 3, 3] + [1] * (vocab - 3))
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    rng = np.random.default_rng(0)

    def weight(*shape):
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    writer.add_tensor("token_embd.weight", weight(vocab, hidden))
    writer.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    writer.add_tensor("output.weight", weight(vocab, hidden))
    for name, shape in [("attn_q", (hidden, hidden)), ("attn_k", (hidden, hidden)), ("attn_v", (hidden, hidden)),
                        ("attn_output", (hidden, hidden)), ("ffn_gate", (ffn, hidden)), ("ffn_up", (ffn, hidden)),
                        ("ffn_down", (hidden, ffn))]:
        writer.add_tensor(f"blk.0.{name}.weight", weight(*shape))
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(hidden, np.float32))
    writer.add_tensor("blk.0.ffn_norm.weight", np.ones(hidden, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# A first run of the real converter (`assets.gguf_llm_dir`, what `gemma_dir` calls), with an `assemble` that
# behaves like the PyPI Gemma package's: it writes the GGUF block by block and refuses an existing file whose
# content is not the expected one. `delay` seconds between blocks give a window to kill it or overlap another run.
CONVERT = textwrap.dedent("""
    import hashlib, sys, time
    from pathlib import Path
    from aullava.assets import gguf_llm_dir

    source, delay = Path(sys.argv[1]), float(sys.argv[2])
    data = source.read_bytes()

    def assemble(path):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            if hashlib.sha256(path.read_bytes()).digest() != hashlib.sha256(data).digest():
                raise FileExistsError(f"{path} already exists with an unexpected sha256")
            return path
        with path.open("wb") as out:
            for start in range(0, len(data), 4096):
                out.write(data[start:start + 4096])
                out.flush()
                print("block", flush=True)
                time.sleep(delay)
        return path

    print("converted", gguf_llm_dir("tiny-llm", assemble), flush=True)
""")


def _convert(home: Path, gguf_path: Path, delay: float) -> subprocess.Popen:
    env = {**os.environ, "AULLAVA_HOME": str(home), "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-c", CONVERT, str(gguf_path), str(delay)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _assert_converted(home: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = home / "tiny-llm"
    model = AutoModelForCausalLM.from_pretrained(str(target))
    assert model.config.hidden_size == 16
    assert AutoTokenizer.from_pretrained(str(target))("ab")["input_ids"]
    leftovers = [p.name for p in home.iterdir() if p.name not in ("tiny-llm", ".locks")]
    assert leftovers == [], leftovers


def test_killed_first_conversion_is_redone_by_the_next_run(tmp_path):
    gguf_path = write_tiny_gguf(tmp_path / "tiny.gguf")
    home = tmp_path / "home"
    first = _convert(home, gguf_path, delay=30)
    assert first.stdout.readline().strip() == "block"  # killed with half a GGUF written
    first.send_signal(signal.SIGKILL)
    first.wait()
    second = _convert(home, gguf_path, delay=0)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    assert "converted" in out
    _assert_converted(home)


def test_two_first_runs_at_once_both_succeed(tmp_path):
    gguf_path = write_tiny_gguf(tmp_path / "tiny.gguf")
    home = tmp_path / "home"
    runs = [_convert(home, gguf_path, delay=0.5) for _ in range(2)]
    results = [run.communicate(timeout=300) for run in runs]
    for run, (out, err) in zip(runs, results):
        assert run.returncode == 0, err
        assert out.strip().endswith(str(home / "tiny-llm"))
    _assert_converted(home)


def test_aullava_home_that_is_a_file_is_one_clear_error(tmp_path, monkeypatch, capsys):
    from aullava.cli import main

    home = tmp_path / "not-a-folder"
    home.write_text("x")
    monkeypatch.setenv("AULLAVA_HOME", str(home))
    assert main(["info"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: AULLAVA_HOME") and "is a file" in err[0], err
