"""Shared fixtures: a character-level tokenizer, tiny random configs of the real model classes, and the analysis
scripts (`scripts/*.py`, not a package) loaded as modules.

The test folders mirror `src/aullava` (one per part; `scripts/` for the analysis scripts), except that the tests of
`aullava.datasets` live in `dataset_readers/`: this folder is on sys.path, and a folder named `datasets` would pose
as the HF `datasets` package that transformers probes for."""

from __future__ import annotations

import importlib.util
import string
from pathlib import Path

import pytest


def make_char_tokenizer(directory, merges: list[tuple[str, str]] | None = None):
    """A fast tokenizer with one token per printable character: tiny, offline, and exercises the generic
    (non-Gemma) code paths such as prefix handling and offset mapping. With `merges` it is a BPE tokenizer that also
    has those multi-character tokens (e.g. ", ", "0."), as real subword vocabularies do."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<bos>", "<eos>", "<unk>"]
    chars = sorted(set(string.printable) - set("\x0b\x0c\r"))
    vocab = {tok: i for i, tok in enumerate(specials + chars + [a + b for a, b in merges or []])}
    if merges:
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    else:
        tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
                                   unk_token="<unk>")
    fast.save_pretrained(str(directory))
    return fast


@pytest.fixture(scope="session")
def char_tokenizer_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("char_tokenizer")
    make_char_tokenizer(directory)
    return directory


def tiny_llm_spec(tokenizer_dir, model_type: str = "gemma3_text") -> dict:
    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(str(tokenizer_dir)))
    config = {"model_type": model_type, "vocab_size": vocab, "hidden_size": 64, "intermediate_size": 128,
              "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32,
              "max_position_embeddings": 4096, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
    if model_type == "gemma3_text":
        config.update({"sliding_window": 64, "layer_types": ["sliding_attention", "full_attention"]})
    return {"config": config, "tokenizer": str(tokenizer_dir)}


def tiny_model_config(tokenizer_dir, vision: str = "efficientnet", llm: str = "gemma3_text", au_set="bp4d",
                      prompt_style: str = "short"):
    from aullava.model.config import AuLlavaConfig

    if vision == "efficientnet":
        vision_spec = {"type": "efficientnet-lite0", "pretrained": False, "image_size": 64, "token_grid": 2}
    else:
        vision_spec = {"type": "hf", "config": {"model_type": "clip_vision_model", "hidden_size": 32,
                                               "intermediate_size": 64, "num_hidden_layers": 2,
                                               "num_attention_heads": 2, "image_size": 32, "patch_size": 8}}
    return AuLlavaConfig(vision=vision_spec, llm=tiny_llm_spec(tokenizer_dir, llm), au_set=au_set,
                         prompt_style=prompt_style,
                         lora={"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0,
                               "llm_targets": ["q_proj", "k_proj", "v_proj", "o_proj"], "vision": True})


@pytest.fixture(scope="session")
def astronaut_path():
    """The bundled example face (public domain), as a file path."""
    from importlib import resources

    with resources.as_file(resources.files("aullava").joinpath("resources", "examples", "astronaut.png")) as p:
        yield p


@pytest.fixture(scope="session")
def detector():
    """One MediaPipe face detector for the tests that need default settings."""
    from aullava.faces.detector import FaceDetector

    with FaceDetector() as det:
        yield det


@pytest.fixture(scope="module")
def tiny_checkpoint(char_tokenizer_dir, tmp_path_factory):
    """A saved tiny random model over the default AU set, for the command-line, video and server tests."""
    import torch

    from aullava.model.modeling import AuLlavaModel

    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny_ckpt")
    AuLlavaModel(tiny_model_config(char_tokenizer_dir, au_set="default")).save_pretrained(directory)
    return directory


def load_script(name: str):
    """`scripts/<name>.py` as a module (the scripts put their own folder on sys.path for each other's imports)."""
    path = Path(__file__).parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
