"""`present_weight: balanced`: one loss weight per AU from its share of present values in the training labels."""

import pytest

from aullava.datasets import read_manifest
from aullava.datasets.samples import LabelledFaces, MixedDataset
from aullava.training.present_weights import (BALANCED_ODDS, MAX_WEIGHT, apply_balanced_weights, balanced_weights,
                                              present_shares, split_present_weight)


def _faces(tmp_path, name, rows):
    path = tmp_path / f"{name}.csv"
    path.write_text("image,subject,AU01,AU12\n" + "".join(f"{name}{i}.png,s{i},{a},{b}\n"
                                                          for i, (a, b) in enumerate(rows)))
    return LabelledFaces(read_manifest(path), cache=None)


def test_shares_count_what_the_answer_writes_as_present_in_every_format(tmp_path):
    # AU1 present in 1 of 10 rows, AU12 in 5; 0.004 is written "0.00" (absent), an empty cell is not labelled
    rows = [(0.5, 0.3)] + [(0.0, 0.3)] * 4 + [(0.004, 0.0)] * 4 + [(0.0, "")]
    shares = present_shares(_faces(tmp_path, "a", rows))
    formats = 3  # the continuous labels also give the binary and discrete answers
    assert shares["AU1"] == (1 * formats, 10 * formats)
    assert shares["AU12"] == (5 * formats, 9 * formats)
    mixed = present_shares(MixedDataset([_faces(tmp_path, "a", rows), _faces(tmp_path, "b", [(1.0, 1.0)] * 10)]))
    assert mixed["AU1"] == (11 * formats, 20 * formats)


def test_balanced_weights_give_every_au_the_same_weighted_odds():
    weights = balanced_weights({"AU1": (14, 100), "AU12": (50, 100), "AU26": (0, 100), "AU4": (1, 1000)})
    assert weights["AU1"] == pytest.approx(4.0, abs=1e-3)  # the v2 default model's weight at its ~14 % present
    assert weights["AU12"] == pytest.approx(BALANCED_ODDS, abs=1e-3)  # half present: below 1
    assert "AU26" not in weights  # never present: its weight never applies
    assert weights["AU4"] == MAX_WEIGHT  # bounded
    for au, (p, n) in {"AU1": (14, 100), "AU12": (50, 100)}.items():
        assert weights[au] * p / (n - p) == pytest.approx(BALANCED_ODDS, rel=1e-3)


def test_recipe_value_is_a_number_or_balanced():
    assert split_present_weight({"present_weight": "balanced", "au_set": "default"}) == (
        {"present_weight": 1.0, "au_set": "default"}, True)
    assert split_present_weight({"present_weight": 4}) == ({"present_weight": 4}, False)
    assert split_present_weight({}) == ({}, False)
    with pytest.raises(ValueError, match="model.present_weight must be a number > 0 or 'balanced', got 'balance'"):
        split_present_weight({"present_weight": "balance"})


def test_balanced_weights_reach_the_loss_and_the_saved_config(tmp_path, char_tokenizer_dir):
    from aullava.model.config import AuLlavaConfig
    from aullava.model.modeling import AuLlavaModel
    from conftest import tiny_model_config

    model = AuLlavaModel(tiny_model_config(char_tokenizer_dir, au_set=["AU1", "AU12"]))
    rows = [(0.5, 0.3)] + [(0.0, 0.3)] * 4 + [(0.0, 0.0)] * 5
    weights = apply_balanced_weights(model, _faces(tmp_path, "a", rows))
    assert weights["AU1"] > 1.0 > weights["AU12"]
    example = model.processor.encode_example("binary", [1.0, 1.0])
    supervised = [w for w, label in zip(example["label_weights"], example["labels"]) if label != -100]
    assert supervised[1] == weights["AU1"] and supervised[4] == weights["AU12"]  # "[1, 1]": the two values
    assert [supervised[i] for i in (0, 2, 3, 5, 6)] == [1.0] * 5
    again = AuLlavaConfig.from_dict(model.config.to_dict())
    assert again.present_weights == weights
    assert "present_weights" not in AuLlavaConfig.from_dict({}).to_dict()  # old config.json files stay as they were
