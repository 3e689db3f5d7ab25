"""The draft head (`aullava.model.draft_head`): a better first guess for the exact readout, never another answer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from decoding_helpers import random_crops, tiny_model

from aullava.aus.answer_format import AnswerFormat
from aullava.model.decoding.parallel import ParallelDecoder
from aullava.model.draft_head import DRAFT_HEAD_NAME, DraftHead

B, D, C = AnswerFormat.BINARY, AnswerFormat.DISCRETE, AnswerFormat.CONTINUOUS


def readouts(model, crops, formats=(B, D, C), one_pass=False):
    return ParallelDecoder(model, one_pass=one_pass).decode(crops, formats)


def test_any_head_gives_the_same_answers_and_a_head_that_knows_them_saves_passes(char_tokenizer_dir):
    model = tiny_model(char_tokenizer_dir, "bp4d", 3)
    crops = random_crops(24, seed=3)
    plain = readouts(model, crops)
    hidden = model.language_model.get_input_embeddings().embedding_dim
    torch.manual_seed(0)
    model.draft_head = DraftHead(hidden, len(model.au_set)).eval()  # random guesses
    for fmt in (B, D, C):
        assert [r[fmt].text for r in readouts(model, crops)] == [r[fmt].text for r in plain]
    # a head whose guess is each face's answer: fitted on those very faces (logistic regression separates 24
    # points in this many dimensions), so every binary answer is found in one pass
    from sklearn.linear_model import LogisticRegression

    embeds = ParallelDecoder(model).face_embeds(crops)
    features = DraftHead.features(embeds).numpy()
    answers = np.stack([r[B].values for r in plain])
    with torch.no_grad():
        for au in range(answers.shape[1]):
            y = answers[:, au] >= 0.5
            if y.all() or not y.any():
                model.draft_head.linear.weight[au] = 0
                model.draft_head.linear.bias[au] = 10.0 if y.all() else -10.0
                continue
            fitted = LogisticRegression(C=1e4, max_iter=5000).fit(features, y)
            model.draft_head.linear.weight[au] = torch.from_numpy(fitted.coef_[0]).float()
            model.draft_head.linear.bias[au] = float(fitted.intercept_[0])
    headed = readouts(model, crops, (B,))
    assert [r[B].text for r in headed] == [r[B].text for r in plain]
    assert all(r[B].passes == 1 for r in headed)
    assert np.mean([r[B].passes for r in plain]) > 1  # all-absent was not already right everywhere


def test_one_pass_keeps_its_all_absent_draft(char_tokenizer_dir):
    model = tiny_model(char_tokenizer_dir, "disfa", 4)
    crops = random_crops(8, seed=4)
    before = readouts(model, crops, (B,), one_pass=True)
    model.draft_head = DraftHead(model.language_model.get_input_embeddings().embedding_dim, len(model.au_set))
    with torch.no_grad():
        model.draft_head.linear.bias.fill_(5.0)  # guesses "all present"
    after = readouts(model, crops, (B,), one_pass=True)
    assert [r[B].text for r in after] == [r[B].text for r in before]


def test_the_head_is_saved_beside_the_checkpoint_and_loaded_with_it(char_tokenizer_dir, tmp_path):
    from aullava.model.modeling import AuLlavaModel

    model = tiny_model(char_tokenizer_dir, "disfa", 5)
    model.save_pretrained(tmp_path / "plain")
    assert AuLlavaModel.from_pretrained(tmp_path / "plain").draft_head is None
    hidden = model.language_model.get_input_embeddings().embedding_dim
    head = DraftHead(hidden, len(model.au_set))
    model.save_pretrained(tmp_path / "with")
    head.save(tmp_path / "with")
    loaded = AuLlavaModel.from_pretrained(tmp_path / "with").draft_head
    assert torch.equal(loaded.linear.weight, head.linear.weight)
    DraftHead(hidden, len(model.au_set) + 1).save(tmp_path / "plain")
    with pytest.raises(ValueError, match=DRAFT_HEAD_NAME):
        AuLlavaModel.from_pretrained(tmp_path / "plain")
