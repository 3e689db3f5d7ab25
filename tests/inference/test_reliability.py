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

SRC = str(Path(__file__).resolve().parents[2] / "src")


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
    from aullava.runtime.assets import gguf_llm_dir

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
    _one_error_line(capsys, "AULLAVA_HOME", "is a file")


def _one_error_line(capsys, *needles) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "Traceback" not in err[0]
    for needle in needles:
        assert needle in err[0], (needle, err[0])
    return err[0]


# ----------------------------------------------------------------------------------------------- checkpoints

@pytest.fixture()
def checkpoint(char_tokenizer_dir, tmp_path):
    import torch

    from aullava.model.modeling import AuLlavaModel
    from conftest import tiny_model_config

    torch.manual_seed(0)
    directory = tmp_path / "ckpt"
    AuLlavaModel(tiny_model_config(char_tokenizer_dir, au_set="default")).save_pretrained(directory)
    return directory


def _rewrite(path: Path, keep) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    save_file({k: v for k, v in ((k, keep(k, v)) for k, v in tensors.items()) if v is not None}, str(path))


def test_checkpoint_missing_adapter_tensors_is_refused(checkpoint):
    from aullava.model.checkpoint import CheckpointError
    from aullava.model.modeling import AuLlavaModel

    names = sorted(__import__("safetensors.torch").torch.load_file(str(checkpoint / "adapter_model.safetensors")))
    dropped = set(names[len(names) // 4:])  # keep a quarter, as a half-copied file would
    _rewrite(checkpoint / "adapter_model.safetensors", lambda k, v: None if k in dropped else v)
    with pytest.raises(CheckpointError) as info:
        AuLlavaModel.from_pretrained(checkpoint)
    message = str(info.value)
    assert message.startswith(f"{checkpoint}: damaged checkpoint: adapter_model.safetensors lacks ")
    assert message.split(" lacks ")[1].split()[0] in dropped and f"{len(dropped)} of {len(names)}" in message


def test_checkpoint_with_an_empty_adapter_is_refused(checkpoint):
    from aullava.model.checkpoint import CheckpointError
    from aullava.model.modeling import AuLlavaModel

    _rewrite(checkpoint / "adapter_model.safetensors", lambda k, v: None)
    with pytest.raises(CheckpointError, match="adapter_model.safetensors lacks"):
        AuLlavaModel.from_pretrained(checkpoint)


def test_checkpoint_with_a_wrong_projector_shape_is_refused(checkpoint):
    from aullava.model.checkpoint import CheckpointError
    from aullava.model.modeling import AuLlavaModel

    _rewrite(checkpoint / "projector.safetensors", lambda k, v: v[:, :-1].contiguous() if v.ndim == 2 else v)
    with pytest.raises(CheckpointError, match=r"projector.safetensors has weight of shape"):
        AuLlavaModel.from_pretrained(checkpoint)


def test_truncated_adapter_is_one_error_line_naming_it(checkpoint, capsys, astronaut_path):
    from aullava.cli import main

    path = checkpoint / "adapter_model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert main(["predict", str(astronaut_path), "--model", str(checkpoint), "-q"]) == 2
    _one_error_line(capsys, str(checkpoint), "adapter_model.safetensors cannot be read")


@pytest.mark.parametrize("content", ["[]", "{not json", ""])
def test_config_json_that_is_not_an_object_is_one_error_line(checkpoint, capsys, astronaut_path, content):
    from aullava.cli import main

    (checkpoint / "config.json").write_text(content)
    assert main(["predict", str(astronaut_path), "--model", str(checkpoint)]) == 2
    _one_error_line(capsys, "config.json")


def test_config_json_list_refused_by_from_pretrained(checkpoint):
    from aullava.model.checkpoint import CheckpointError
    from aullava.model.modeling import AuLlavaModel

    (checkpoint / "config.json").write_text("[]")
    with pytest.raises(CheckpointError, match="expected a JSON object"):
        AuLlavaModel.from_pretrained(checkpoint)


def test_resume_skips_a_damaged_last_checkpoint(char_tokenizer_dir, tmp_path, caplog):
    from dataclasses import asdict

    from transformers import TrainerCallback

    from aullava.training.recipe import train
    from conftest import tiny_model_config

    class Steps(TrainerCallback):
        steps = 0

        def on_step_end(self, args, state, control, **kwargs):
            Steps.steps += 1

    def recipe(max_steps):
        config = tiny_model_config(char_tokenizer_dir, vision="clip", au_set=["AU1", "AU2"])
        return {"model": asdict(config), "data": {"train": {"type": "patterns", "num_samples": 8}, "formats":
                                                  ["binary"]},
                "training": {"output_dir": str(tmp_path / "run"), "per_device_train_batch_size": 2,
                             "max_steps": max_steps, "save_steps": 2, "use_cpu": True, "disable_tqdm": True,
                             "report_to": []}}

    train(recipe(4))
    last = tmp_path / "run" / "checkpoint-4" / "adapter_model.safetensors"
    last.write_bytes(last.read_bytes()[:100])  # killed while writing its last checkpoint
    with caplog.at_level("WARNING"):
        trainer = train(recipe(6), callbacks=[Steps()])
    assert Steps.steps == 4 and trainer.state.global_step == 6  # resumed at step 2, not 0, not the damaged 4
    text = caplog.text
    assert "skipping damaged checkpoint" in text and "checkpoint-4" in text and "checkpoint-2" in text


# ----------------------------------------------------------------------------------------------- command line

@pytest.mark.parametrize("options, needle", [
    (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "-1"], "--batch-size"),
    (["--device", "bogus"], "--device"),
    (["--out", "aus.xlsx"], "unknown table format"),
])
def test_predict_option_mistakes_are_one_line_exit_2(options, needle, capsys, astronaut_path, checkpoint):
    from aullava.cli import main

    with pytest.raises(SystemExit) if "batch" in needle else _no_raise() as info:
        code = main(["predict", str(astronaut_path), "--model", str(checkpoint), *options])
    assert (info.value.code if info else code) == 2
    _one_error_line(capsys, needle)


class _no_raise:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_cuda_on_a_cpu_only_torch_is_refused_before_loading(capsys, astronaut_path, checkpoint):
    import torch

    from aullava.cli import main

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    assert main(["predict", str(astronaut_path), "--model", str(checkpoint), "--device", "cuda"]) == 2
    _one_error_line(capsys, "--device cuda")


def test_out_mistakes_are_found_before_the_model_loads(tmp_path, capsys, astronaut_path, checkpoint):
    from aullava.cli import main

    a_file = tmp_path / "taken.csv"
    a_file.write_text("x")
    cases = {str(a_file / "aus.csv"): "is a file, not a folder",
             str(a_file / "deeper" / "aus.csv"): "is a file, not a folder", str(tmp_path / "aus.xlsx"): "unknown",
             str(a_file) + "/": "not a folder"}
    if not os.access("/proc", os.W_OK):
        cases["/proc/aus.csv"] = "cannot write"
    for out, needle in cases.items():
        assert main(["predict", str(astronaut_path), "--model", str(checkpoint), "--out", out]) == 2
        _one_error_line(capsys, "--out", needle)
    # an existing folder is not a mistake: it gets predictions.csv (one shard per process under a launcher)
    assert main(["predict", str(astronaut_path), "--model", str(checkpoint), "--out", str(tmp_path), "-q"]) == 0
    assert (tmp_path / "predictions.csv").is_file()


def test_parquet_out_is_written_as_parquet(tmp_path, capsys, astronaut_path, checkpoint):
    import pandas as pd

    from aullava.cli import main

    out = tmp_path / "aus.parquet"
    assert main(["predict", str(astronaut_path), "--model", str(checkpoint), "--out", str(out), "-q"]) == 0
    assert len(pd.read_parquet(out)) == 1


def test_empty_folder_is_a_clear_message(tmp_path, capsys, checkpoint):
    from aullava.cli import main

    (tmp_path / "photos").mkdir()
    out = tmp_path / "aus.csv"
    assert main(["predict", str(tmp_path / "photos"), "--model", str(checkpoint), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "no image or video files in this folder" in err and str(tmp_path / "photos") in err
    assert not out.exists()


@pytest.mark.parametrize("options, needle", [(["--fold", "0"], "--fold"), (["--limit", "0"], "--limit"),
                                             (["--limit", "-1"], "--limit"), (["--workers", "0"], "--workers")])
def test_eval_option_mistakes_exit_2(options, needle, tmp_path, capsys):
    from aullava.cli import main

    spec = tmp_path / "spec.yaml"
    spec.write_text("{type: manifest, path: m.csv}")
    with pytest.raises(SystemExit) as info:
        main(["eval", "--data", str(spec), "--out", str(tmp_path / "r"), *options])
    assert info.value.code == 2
    _one_error_line(capsys, needle)


def test_eval_out_inside_a_file_exit_2(tmp_path, capsys):
    from aullava.cli import main

    spec = tmp_path / "spec.yaml"
    spec.write_text("{type: manifest, path: m.csv}")
    assert main(["eval", "--data", str(spec), "--out", str(spec / "report")]) == 2
    _one_error_line(capsys, "--out", "is a file")


def test_debug_shows_the_traceback(tmp_path):
    from aullava.cli import main

    spec = tmp_path / "spec.yaml"
    spec.write_text("")
    with pytest.raises(ValueError, match="empty"):
        main(["--debug", "eval", "--data", str(spec), "--out", str(tmp_path / "r"),
              "--predictions", str(spec)])


# ----------------------------------------------------------------------------------------------- specs, predictions

def _manifest(tmp_path, subject="s1") -> Path:
    import pandas as pd

    rows = [{"image": f"img{i}.jpg", "subject": subject if i == 0 else f"s{i % 3}", "AU06_r": i % 6,
             "AU12": (i % 5) / 5, "AU25_c": i % 2} for i in range(12)]
    path = tmp_path / "m.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _predictions(tmp_path, **override) -> Path:
    import pandas as pd

    rows = [{"image": str(tmp_path / f"img{i}.jpg"), "AU06_r": 1, "AU12": 0.5, "AU25_c": 1} for i in range(12)]
    rows[3].update(override)
    path = tmp_path / "pred.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("text, needle", [("", "empty"), ("{type: manifest, path: [", "not valid YAML"),
                                          ("[1, 2]", "one dataset at a time"), ("42", "expected a dataset spec"),
                                          ("{type: manifest, paht: m.csv}", "did you mean 'path'?"),
                                          ("{type: manfest, path: m.csv}", "did you mean 'manifest'?")])
def test_eval_spec_mistakes_are_one_line(text, needle, tmp_path, capsys):
    from aullava.cli import main

    _manifest(tmp_path)
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    code = main(["eval", "--data", str(spec), "--predictions", str(_predictions(tmp_path)), "--out",
                 str(tmp_path / "r")])
    assert code == 2
    _one_error_line(capsys, str(spec), needle)


def test_training_spec_with_an_unknown_key_is_refused():
    from aullava.datasets import build_dataset

    with pytest.raises(ValueError, match=r"unknown key 'num_sample'.*did you mean 'num_samples'"):
        build_dataset({"type": "patterns", "num_sample": 8}, num_aus=3, image_size=32)


@pytest.mark.parametrize("column, value", [("AU06_r", 7), ("AU12", -3), ("AU25_c", "abc")])
def test_out_of_range_predictions_are_refused(column, value, tmp_path, capsys):
    from aullava.cli import main

    _manifest(tmp_path)
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"{{type: manifest, path: {tmp_path / 'm.csv'}}}")
    code = main(["eval", "--data", str(spec), "--predictions", str(_predictions(tmp_path, **{column: value})),
                 "--out", str(tmp_path / "r")])
    assert code == 2
    _one_error_line(capsys, "pred.csv row 4", column)


def test_valid_predictions_are_scored(tmp_path, capsys):
    from aullava.cli import main

    _manifest(tmp_path)
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"{{type: manifest, path: {tmp_path / 'm.csv'}}}")
    assert main(["eval", "--data", str(spec), "--predictions", str(_predictions(tmp_path)), "--out",
                 str(tmp_path / "r"), "-q"]) == 0
    assert (tmp_path / "r" / "metrics.json").is_file()


@pytest.mark.parametrize("subject", ["nan", "NaN", "null"])
def test_subject_written_nan_is_refused(subject, tmp_path):
    from aullava.datasets import read_frames

    path = _manifest(tmp_path, subject=subject)
    with pytest.raises(ValueError, match=r"line 2: subject .* looks like a missing value"):
        read_frames({"type": "manifest", "path": str(path)})


def test_eval_reports_dropped_frames(tmp_path, capsys, checkpoint, astronaut_path):
    import shutil

    from aullava.cli import main

    shutil.copy(astronaut_path, tmp_path / "face.png")
    (tmp_path / "blank.png").write_bytes(b"not an image")
    (tmp_path / "m.csv").write_text("image,subject,AU12\nface.png,s1,0.4\nblank.png,s2,0.0\nmissing.png,s3,0.2\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"{{type: manifest, path: {tmp_path / 'm.csv'}}}")
    assert main(["eval", "--data", str(spec), "--model", str(checkpoint), "--out", str(tmp_path / "r"), "-q",
                 "--crop-cache", str(tmp_path / "crops"), "--formats", "continuous"]) == 0
    err = capsys.readouterr().err
    assert "2 of 3 frames not evaluated" in err and "blank.png" in err, err
    assert "asked the model's whole AU set" in err
    assert "asked the model's whole AU set" in (tmp_path / "r" / "report.md").read_text()


# ----------------------------------------------------------------------------------------------- inputs, downloads

def test_fifo_among_images_does_not_hang_predict(tmp_path, checkpoint, astronaut_path):
    import shutil

    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(astronaut_path, folder / "face.png")
    os.mkfifo(folder / "pipe.jpg")
    run = subprocess.run([sys.executable, "-m", "aullava.cli", "predict", str(folder), "--model", str(checkpoint),
                          "-q", "--out", str(tmp_path / "aus.csv")], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": SRC})
    assert run.returncode == 1, run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "pipe.jpg" in errors[0] and "named pipe" in errors[0], run.stderr
    assert "face.png" in (tmp_path / "aus.csv").read_text()


def test_hub_id_is_refused_without_opt_in(monkeypatch, checkpoint, capsys, astronaut_path):
    import json

    from aullava.cli import main

    config = json.loads((checkpoint / "config.json").read_text())
    config["llm"] = {"name_or_path": "google/gemma-3-270m"}
    (checkpoint / "config.json").write_text(json.dumps(config))
    monkeypatch.delenv("AULLAVA_ALLOW_DOWNLOAD", raising=False)
    started = time.monotonic()
    assert main(["predict", str(astronaut_path), "--model", str(checkpoint), "-q"]) == 2
    assert time.monotonic() - started < 60
    _one_error_line(capsys, "google/gemma-3-270m", "AULLAVA_ALLOW_DOWNLOAD=1")


# ----------------------------------------------------------------------------------------------- noise

def test_normal_predict_prints_no_third_party_noise(tmp_path, checkpoint, astronaut_path):
    run = subprocess.run([sys.executable, "-m", "aullava.cli", "predict", str(astronaut_path), "--model",
                          str(checkpoint), "-q", "--out", str(tmp_path / "aus.csv")], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "PYTHONPATH": SRC})
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert all(line.startswith(("# model:", "wrote ")) for line in lines), lines
