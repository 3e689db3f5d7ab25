"""Parallel (Jacobi) decoding gives exactly the sequential greedy answers, and probabilities consistent with them.

Tiny random models of the real classes, random face crops; the reference is `inference.generate_answers`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_char_tokenizer, tiny_model_config
from decoding_helpers import compare, random_crops, tiny_model

from aullava.aus.answer_format import ALL_FORMATS, AnswerFormat, parse_answer, serialize_answer
from aullava.model.decoding.grammar import AnswerGrammar
from aullava.model.decoding.parallel import ParallelDecoder

B, D, C = AnswerFormat.BINARY, AnswerFormat.DISCRETE, AnswerFormat.CONTINUOUS


# multi-character answer tokens, so the greedy decoder can choose a segmentation other than the tokenizer's own
ANSWER_MERGES = [(",", " "), ("0", "."), ("0", "0"), ("1", "]"), (", ", "0"), (" ", "1")]


@pytest.fixture(scope="module")
def merging_tokenizer_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("merging_tokenizer")
    make_char_tokenizer(directory, merges=ANSWER_MERGES)
    return directory


@pytest.mark.parametrize("au_set,seed,faces", [("bp4d", 0, 100), ("disfa", 1, 40), (["AU12", "AU25"], 2, 40),
                                               (["AU6"], 3, 20)])
def test_parallel_equals_sequential(char_tokenizer_dir, au_set, seed, faces):
    model = tiny_model(char_tokenizer_dir, au_set, seed)
    decoder, readouts, texts = compare(model, random_crops(faces, seed))
    assert decoder.encoder_calls == faces  # the image is encoded once per face, for all three formats
    # corrections actually happen (a random model barely looks at the image, so answers vary more within an
    # answer than across faces)
    assert max(r[fmt].passes for r in readouts for fmt in ALL_FORMATS) > 1


@pytest.mark.parametrize("seed", [0, 1])
def test_parallel_equals_sequential_when_greedy_segments_differently(merging_tokenizer_dir, seed):
    """The draft is tokenised by the tokenizer ("0." "00"), greedy may pick "0" "." "0" "0": still identical."""
    model = tiny_model(merging_tokenizer_dir, "bp4d", seed)
    crops = random_crops(24, 10 + seed)
    _, readouts, _ = compare(model, crops)
    single = {len(model.tokenizer.decode([t])) for r in readouts for t in r[C].token_ids}
    assert single >= {1, 2}  # answers mix one- and two-character tokens


def test_llama_architecture(char_tokenizer_dir):
    compare(tiny_model(char_tokenizer_dir, "disfa", 5, llm="llama"), random_crops(20, 7))


def test_any_draft_gives_the_greedy_answer(char_tokenizer_dir):
    """The draft only changes the number of passes, never the answer."""
    model = tiny_model(char_tokenizer_dir, "bp4d", 4)
    crops = random_crops(16, 4)
    decoder = ParallelDecoder(model)
    reference = decoder.decode(crops)
    rng = np.random.default_rng(0)
    drafts = {B: [rng.integers(0, 2, 12) for _ in crops], D: [rng.integers(0, 6, 12) for _ in crops],
              C: [rng.random(12).round(2) for _ in crops]}
    for answers, expected in zip(decoder.decode(crops, drafts=drafts), reference):
        for fmt in ALL_FORMATS:
            assert answers[fmt].text == expected[fmt].text
    # drafting from the exact (greedy) answers needs a single pass
    exact = {fmt: [parse_answer(r[fmt].text, fmt, 12) for r in reference] for fmt in ALL_FORMATS}
    assert all(r[fmt].passes == 1 for r in decoder.decode(crops, drafts=exact) for fmt in ALL_FORMATS)


def test_probabilities_agree_with_the_answers(char_tokenizer_dir):
    model = tiny_model(char_tokenizer_dir, "bp4d", 6)
    crops = random_crops(60, 6)
    greedy = ParallelDecoder(model, intensity="greedy").decode(crops)
    for face, mean in zip(greedy, ParallelDecoder(model).decode(crops)):
        binary, discrete, continuous = face[B], face[D], face[C]
        for readout, size in ((binary, 2), (discrete, 6)):
            dist = readout.distribution
            assert dist.shape == (12, size)
            assert np.all(dist >= 0) and np.all(dist <= 1) and np.allclose(dist.sum(1), 1, atol=1e-5)
            np.testing.assert_array_equal(dist.argmax(1), readout.values)  # argmax = the greedy value
            np.testing.assert_allclose(readout.expected, dist @ np.arange(size), atol=1e-5)
        # binary: p(present) ≥ 0.5 exactly when the answer says present
        np.testing.assert_array_equal(binary.expected >= 0.5, binary.values == 1)
        assert np.all((continuous.expected >= 0) & (continuous.expected <= 1))
        assert continuous.distribution is None
        for readout, fmt in ((binary, B), (discrete, D), (continuous, C)):
            np.testing.assert_array_equal(readout.values, parse_answer(readout.text, fmt, 12))
        # the mean readout: same texts and probabilities; intensities are the expectation on the format's grid
        for fmt in ALL_FORMATS:
            assert mean[fmt].text == face[fmt].text
            np.testing.assert_array_equal(mean[fmt].expected, face[fmt].expected)
        np.testing.assert_array_equal(mean[B].values, binary.values)
        np.testing.assert_array_equal(mean[D].values, np.floor(discrete.expected + 0.5))
        np.testing.assert_allclose(mean[C].values, continuous.expected, atol=0.005 + 1e-6)
        np.testing.assert_array_equal(mean[C].values, parse_answer(serialize_answer(mean[C].values, C), C, 12))
    changed = np.mean([(m[D].values != g[D].values).mean() for m, g in zip(ParallelDecoder(model).decode(crops),
                                                                             greedy)])
    assert changed > 0.05  # a random model hesitates: its mean and mode differ on some values


def test_present_weight_tilt_is_undone(char_tokenizer_dir):
    """A model trained with present weight w learned w-times the odds of the digits that make a value present;
    its probabilities divide them by w again (exactly the hand computation), its greedy texts stay as they are."""
    from aullava.model.decoding.readout import value_probabilities

    expected, dist = value_probabilities("[2]", D, 1, {1: {"0": 0.4, "2": 0.6}}, np.array([4.0]))
    np.testing.assert_allclose(dist[0], [0.4 / 0.55, 0, 0.15 / 0.55, 0, 0, 0], atol=1e-6)
    assert expected[0] == pytest.approx(2 * 0.15 / 0.55)
    expected, _ = value_probabilities("[0.30]", C, 1, {3: {"0": 0.5, "3": 0.5}}, np.array([4.0]))
    assert expected[0] == pytest.approx(0.8 * 0.045 + 0.2 * 0.3)  # tenths 0 → 0.8, 3 → 0.2; off-path middle

    model = tiny_model(char_tokenizer_dir, ["AU1", "AU2"], 9)
    crops = random_crops(20, 9)
    plain = ParallelDecoder(model).decode(crops)
    model.config.present_weights = {"AU2": 3.0}  # AU1 keeps `present_weight` (1)
    tilted = ParallelDecoder(model).decode(crops)
    for before, after in zip(plain, tilted):
        for fmt in ALL_FORMATS:
            assert after[fmt].text == before[fmt].text
        np.testing.assert_array_equal(after[B].expected, before[B].expected)  # binary: Platt's job
        np.testing.assert_allclose(after[D].distribution[0], before[D].distribution[0], atol=1e-6)
        p, q = before[D].distribution[1], after[D].distribution[1]
        np.testing.assert_allclose(q, np.r_[p[0], p[1:] / 3] / (p[0] + p[1:].sum() / 3), atol=1e-5)
        assert after[C].expected[1] <= before[C].expected[1] + 1e-6


def test_calibration_moves_probabilities_as_documented_and_never_the_answers(char_tokenizer_dir):
    from aullava.eval.probabilities import apply_temperature

    model = tiny_model(char_tokenizer_dir, "bp4d", 7)
    crops = random_crops(20, 7)
    raw = ParallelDecoder(model).decode(crops)
    model.config.probability_temperature, model.config.probability_bias = {"binary": 1.7, "discrete": 0.5}, {
        "binary": -0.8}
    calibrated = ParallelDecoder(model).decode(crops)
    for before, after in zip(raw, calibrated):
        for fmt in ALL_FORMATS:
            assert after[fmt].text == before[fmt].text
        np.testing.assert_allclose(after[B].expected, apply_temperature(before[B].expected, 1.7, -0.8), atol=1e-5)
        sharper = before[D].distribution ** 2  # T = 0.5 squares the softmax, renormalised
        np.testing.assert_allclose(after[D].distribution, sharper / sharper.sum(1, keepdims=True), atol=1e-5)


def test_continuous_expectation_follows_the_digit_distributions(char_tokenizer_dir):
    """A hand-built case of the documented expectation: digits along the greedy path, the middle off it."""
    from aullava.model.decoding.readout import value_probabilities

    text = "[0.25]"
    probs = {1: {"0": 0.8, "1": 0.2}, 3: {"2": 0.5, "3": 0.5}, 4: {"5": 1.0}}
    expected, _ = value_probabilities(text, C, 1, probs)
    tenth = 0.5 * (0.2 + 0.05) + 0.5 * (0.3 + 0.045)
    assert expected[0] == pytest.approx(0.2 * 1.0 + 0.8 * tenth)


def test_grammar_allows_what_the_prefix_checker_allows(char_tokenizer_dir):
    """The memoised constraint agrees with `is_valid_prefix` on the texts of real answers."""
    from transformers import AutoTokenizer

    from aullava.aus.answer_format import is_valid_prefix, serialize_answer

    tok = AutoTokenizer.from_pretrained(str(char_tokenizer_dir))
    rng = np.random.default_rng(1)
    for fmt in ALL_FORMATS:
        for n in (1, 2, 5, 12):
            grammar = AnswerGrammar(tok, fmt, n)  # one per (format, length): its memo serves every answer
            for _ in range(5):
                values = rng.integers(0, 2 if fmt is B else 6, n) if fmt is not C else rng.random(n).round(2)
                text = serialize_answer(values, fmt)
                for cut in range(len(text) + 1):
                    prefix = text[:cut]
                    expected = tuple(i for i, t in grammar.vocab if is_valid_prefix(prefix + t, fmt, n))
                    if cut == len(text):
                        expected = (tok.eos_token_id,)
                    assert grammar.allowed(prefix) == expected, (fmt, n, prefix)


def test_merged_lora_gives_the_same_model(char_tokenizer_dir):
    """Inference folds LoRA into the weights: same logits (to float precision), same answers, no LoRA left."""
    model = tiny_model(char_tokenizer_dir, "disfa", 8, vision="efficientnet")
    with torch.no_grad():  # a trained-looking adapter (peft initialises B to zero, which would test nothing)
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    crops = random_crops(6, 8, size=64)
    ids = torch.tensor([model.processor.encode_example("binary")["input_ids"]] * len(crops))
    image_mask = torch.tensor([model.processor.encode_example("binary")["image_mask"]] * len(crops))
    with torch.no_grad():
        before = model(crops, ids, torch.ones_like(ids), image_mask)["logits"]
        answers = [r[C].text for r in ParallelDecoder(model).decode(crops)]
        model.merge_lora()
        after = model(crops, ids, torch.ones_like(ids), image_mask)["logits"]
    assert not model.lora_module_names()
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)
    assert [r[C].text for r in ParallelDecoder(model).decode(crops)] == answers


def test_prediction_table_has_answer_and_probability_columns(char_tokenizer_dir, astronaut_path, detector):
    """predict's table: `AU01_c` / `AU01_r` / `AU01_i` answers and `AU01_p` / `AU01_r_mean` / `AU01_i_mean`
    expectations from the parallel readout, consistent with each other; the sequential reference has answers only."""
    from aullava.faces.images import load_image
    from aullava.inference import Predictor

    model = tiny_model(char_tokenizer_dir, ["AU1", "AU12"], 9, vision="efficientnet")
    image = load_image(astronaut_path)
    table = Predictor(model, detector=detector, precision="fp32").predict_table([image, image[:, ::-1].copy()])
    answers = ["AU01_c", "AU12_c", "AU01_r", "AU12_r", "AU01_i", "AU12_i"]
    expected = ["AU01_p", "AU12_p", "AU01_r_mean", "AU12_r_mean", "AU01_i_mean", "AU12_i_mean"]
    head = ["file", "frame", "timestamp", "face", "face_id", "success", "confidence", "x0", "y0", "x1", "y1",
            "pose_pitch", "pose_yaw", "pose_roll", "gaze_angle_x", "gaze_angle_y"]  # aullava.tables: one layout for photos and videos
    assert list(table.columns) == [*head, *answers, *expected, "error"]
    assert len(table) == 2 and table["error"].isna().all()
    p = table[["AU01_p", "AU12_p"]].to_numpy()
    assert np.all((p >= 0) & (p <= 1))
    np.testing.assert_array_equal(p >= 0.5, table[["AU01_c", "AU12_c"]].to_numpy() == 1)
    assert table[["AU01_r_mean", "AU12_r_mean"]].to_numpy().max() <= 5
    # the default intensity readout: the expectations on the answer grids
    np.testing.assert_array_equal(table[["AU01_r", "AU12_r"]].to_numpy(),
                                  np.floor(table[["AU01_r_mean", "AU12_r_mean"]].to_numpy() + 0.5))
    np.testing.assert_allclose(table[["AU01_i", "AU12_i"]].to_numpy(),
                               table[["AU01_i_mean", "AU12_i_mean"]].to_numpy(), atol=0.005 + 1e-6)
    sequential = Predictor(model, detector=detector, precision="fp32", decoder="sequential").predict_table([image])
    assert list(sequential.columns) == [*head, *answers, "error"]
    greedy = Predictor(model, detector=detector, precision="fp32", intensity="greedy").predict_table([image])
    np.testing.assert_array_equal(sequential[answers].to_numpy(), greedy[answers].to_numpy())
    with pytest.raises(ValueError, match="parallel decoder"):
        Predictor(model, detector=detector, precision="fp32", decoder="sequential", intensity="mean")


def test_parallel_equals_sequential_in_the_v2_layout(char_tokenizer_dir):
    """Checkpoints of the v2 prompt template (question after the image, one state per face for all formats) keep
    their layout, and the parallel decoder stays exact on it."""
    from aullava.model.modeling import AuLlavaModel
    from aullava.model.prompts import TEMPLATE_V2

    torch.manual_seed(6)
    config = tiny_model_config(char_tokenizer_dir, au_set="disfa", vision="clip")
    config.template_version = TEMPLATE_V2
    model = tiny_model(char_tokenizer_dir, "disfa", 6)
    v2 = AuLlavaModel(config).eval()
    v2.load_state_dict(model.state_dict())
    assert v2.processor.prompt_ids(B)[0] == v2.processor.prompt_ids(C)[0]  # one description before the face
    assert model.processor.prompt_ids(B)[0] != model.processor.prompt_ids(C)[0]  # v3: one per format
    decoder, readouts, _ = compare(v2, random_crops(30, 6))
    assert len(decoder._prefixes) == 1
    v3 = ParallelDecoder(model).decode(random_crops(30, 6))
    assert not np.allclose([r[B].expected for r in readouts], [r[B].expected for r in v3])  # another layout


def test_one_pass_over_the_greedy_answer_is_the_exact_readout(char_tokenizer_dir):
    """One pass conditions each value on the draft's values before it; with the greedy answer as the draft that is
    the exact readout: same texts, values and probabilities, in one pass."""
    model = tiny_model(char_tokenizer_dir, "bp4d", 7)
    crops = random_crops(24, 7)
    exact = ParallelDecoder(model).decode(crops)
    drafts = {f: [parse_answer(r[f].text, f, 12) for r in exact] for f in ALL_FORMATS}
    for intensity in ("mean", "greedy"):
        reference = exact if intensity == "mean" else ParallelDecoder(model, intensity="greedy").decode(crops)
        one = ParallelDecoder(model, intensity=intensity, one_pass=True).decode(crops, drafts=drafts)
        for a, b in zip(reference, one):
            for fmt in ALL_FORMATS:
                assert b[fmt].passes == 1 and a[fmt].text == b[fmt].text
                np.testing.assert_array_equal(a[fmt].values, b[fmt].values)
                np.testing.assert_allclose(a[fmt].expected, b[fmt].expected, atol=1e-6)


def test_one_pass_values_are_each_positions_choice_given_the_draft(char_tokenizer_dir):
    """From an all-absent draft, a binary value is what the model prefers after 'all earlier AUs absent' — its
    p(present) ≥ 0.5 exactly when the value is 1 (uncalibrated model) — and the answer always parses."""
    model = tiny_model(char_tokenizer_dir, "bp4d", 8)
    crops = random_crops(24, 8)
    one = ParallelDecoder(model, one_pass=True).decode(crops, [B])
    values = np.stack([r[B].values for r in one])
    p = np.stack([r[B].expected for r in one])
    assert np.array_equal(values, (p >= 0.5).astype(values.dtype))
    assert 0 < values.mean() < 1  # not all one answer
    exact = ParallelDecoder(model).decode(crops, [B])
    assert all(r[B].passes == 1 for r in one) and max(r[B].passes for r in exact) > 1
