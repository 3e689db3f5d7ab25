"""`AuLlavaProcessor`: the one place that lays out a sequence (transformers' processor pattern).

One example is: the text before the face (identical for every image of an AU set and format, hence cached and
shareable as a key/value cache) + image placeholders + the text after the face + answer and EOS (training only).
Which words go before and after the face is the prompt template's layout (`model.prompts`): v2 puts the format
question after the image, v3 (new models) before it. A model with the geometry stream
(`model.geometry`) gets its geometry placeholders right after the image placeholders; `image_mask` marks both (the
face's tokens, `AuLlavaModel.face_tokens`), and batches then carry each row's `geometry` vector. Without it the
layout is exactly the paper's, token for token. Training batches are right-padded
(`collate`), generation batches put the rows' common beginning aside and left-pad the rest so every answer starts
in one column (`generation_inputs`). The model only ever sees the tensors built here.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from aullava.aus.answer_format import AnswerFormat, serialize_answer
from aullava.aus.catalogue import AUSet
from aullava.faces.geometry_features import FEATURE_SIZE
from aullava.model.decoding.vocabulary import answer_vocabulary
from aullava.model.prompts import TEMPLATE_VERSION, build_prompt, check_template_version


class AuLlavaProcessor:
    def __init__(self, tokenizer, au_set: AUSet, prompt_style: str, num_image_tokens: int,
                 present_weight: float = 1.0, num_geometry_tokens: int = 0,
                 present_weights: dict[str, float] | None = None, template_version: str = TEMPLATE_VERSION):
        check_template_version(template_version)
        self.tokenizer = tokenizer
        self.template_version = template_version
        self.au_set = au_set
        self.prompt_style = prompt_style
        self.num_image_tokens = num_image_tokens
        self.num_geometry_tokens = num_geometry_tokens
        self.present_weight = float(present_weight)
        self.present_weights = dict(present_weights or {})  # AU id → its own weight (`present_weight` otherwise)
        self._prompt_cache: dict[tuple, tuple[list[int], list[int]]] = {}
        self._answer_vocab: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def num_face_tokens(self) -> int:
        """Placeholders per face: image tokens, then geometry tokens."""
        return self.num_image_tokens + self.num_geometry_tokens

    @property
    def image_token_id(self) -> int:
        return self.tokenizer.pad_token_id  # placeholder value; those embeddings are overwritten

    @property
    def pad_token_id(self) -> int:
        return self.tokenizer.pad_token_id

    @property
    def eos_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    def prompt_ids(self, fmt: AnswerFormat | str, au_set: AUSet | None = None) -> tuple[list[int], list[int]]:
        """Token ids before and after the image for one (AU set, format): identical for every image, hence cached.
        `au_set` defaults to the model's; a dataset labelling other AUs asks its own set (the paper's per-dataset
        descriptions)."""
        fmt = AnswerFormat.parse(fmt)
        au_set = au_set or self.au_set
        key = (au_set.name, au_set.ids, fmt.value)
        if key not in self._prompt_cache:
            prompt = build_prompt(au_set, fmt, self.prompt_style, self.template_version)
            bos = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []
            prefix = bos + self.tokenizer(prompt.prefix, add_special_tokens=False)["input_ids"]
            question = self.tokenizer(prompt.question, add_special_tokens=False)["input_ids"]
            self._prompt_cache[key] = (prefix, question)
        return self._prompt_cache[key]

    def encode_example(self, fmt: AnswerFormat | str, values=None, mask=None,
                       au_set: AUSet | None = None) -> dict[str, list[int]]:
        """One sequence: prefix, face placeholders (image, then geometry), question and, for training, the answer +
        EOS as labels.

        Answer tokens of AUs whose `mask` is False keep label -100 and their value is replaced by 0 in the input,
        so nothing about an unlabelled AU reaches the loss."""
        prefix, question = self.prompt_ids(fmt, au_set)
        ids = prefix + [self.image_token_id] * self.num_face_tokens + question
        image_mask = [0] * len(prefix) + [1] * self.num_face_tokens + [0] * len(question)
        labels = [-100] * len(ids)
        weights = [0.0] * len(ids)
        if values is not None:
            if mask is not None:  # an unlabelled value is written as 0 and not supervised: its label never enters
                values = np.where(np.asarray(mask, dtype=bool), np.asarray(values, dtype=np.float64), 0.0)
            answer = serialize_answer(values, fmt)
            encoded = self.tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)
            hidden_spans = _value_spans(answer, mask)
            answer_ids = encoded["input_ids"] + [self.eos_token_id]
            present = [float(v) > 0 for v in answer[1:-1].split(", ")]
            asked = (au_set or self.au_set).ids
            weight_of = [self.present_weights.get(au, self.present_weight) for au, p in zip(asked, present) if p]
            present_spans = list(zip(_value_spans(answer, [not p for p in present]), weight_of))
            offsets = encoded["offset_mapping"]
            ids += answer_ids
            image_mask += [0] * len(answer_ids)
            labels += [-100 if _overlaps(o, hidden_spans) else tok for tok, o in zip(encoded["input_ids"], offsets)]
            labels += [self.eos_token_id]
            weights += [next((w for span, w in present_spans if _overlaps(o, [span])), 1.0) for o in offsets]
            weights += [1.0]
        return {"input_ids": ids, "image_mask": image_mask, "labels": labels, "label_weights": weights}

    def collate(self, features: list[dict[str, Any]], share_prefix: bool = False) -> dict[str, torch.Tensor]:
        """A right-padded training batch; labels only on answer tokens (prompt and image positions are -100).
        Each feature: `image` (uint8 crop), `format`, `values`, optional `mask` and `au_set`; for a model with the
        geometry stream also `geometry` (the face's `aullava.faces.geometry_features` vector).

        `share_prefix`: the text every row begins with (the description when the rows ask the same AU set) is sent
        once as `prefix_ids` and cut from the rows (see `AuLlavaModel.forward`)."""
        encoded = [self.encode_example(f["format"], f["values"], f.get("mask"), f.get("au_set")) for f in features]
        prefix = self._shared_prefix(features) if share_prefix else []
        if prefix:
            encoded = [{key: values[len(prefix):] for key, values in e.items()} for e in encoded]
        length = max(len(e["input_ids"]) for e in encoded)
        weighted = self.present_weight != 1.0 or any(w != 1.0 for w in self.present_weights.values())
        # (weights of 1 give the plain mean: left out)
        batch = {
            "input_ids": torch.full((len(encoded), length), self.pad_token_id, dtype=torch.long),
            "attention_mask": torch.zeros((len(encoded), length), dtype=torch.long),
            "image_mask": torch.zeros((len(encoded), length), dtype=torch.long),
            "labels": torch.full((len(encoded), length), -100, dtype=torch.long),
        }
        if weighted:
            batch["label_weights"] = torch.zeros((len(encoded), length))
        for row, example in enumerate(encoded):
            n = len(example["input_ids"])
            batch["input_ids"][row, :n] = torch.tensor(example["input_ids"])
            batch["attention_mask"][row, :n] = 1
            batch["image_mask"][row, :n] = torch.tensor(example["image_mask"])
            batch["labels"][row, :n] = torch.tensor(example["labels"])
            if weighted:
                batch["label_weights"][row, :n] = torch.tensor(example["label_weights"])
        batch["images"] = torch.from_numpy(np.stack([f["image"] for f in features]))
        if self.num_geometry_tokens:
            batch["geometry"] = self.geometry_batch([f.get("geometry") for f in features])
        if prefix:
            batch["prefix_ids"] = torch.tensor([prefix], dtype=torch.long)
        return batch

    def _shared_prefix(self, features: list[dict[str, Any]]) -> list[int]:
        """What every row's text begins with whatever the batch holds: the beginning common to all formats of the
        rows' AU set (the description), or nothing when rows ask different AU sets. It must not depend on which
        formats a batch happens to hold, or 2 processes × batch B would not train like 1 process × 2B (the shared
        part runs without gradient)."""
        sets = {(s.name, s.ids) for s in (f.get("au_set") or self.au_set for f in features)}
        if len(sets) != 1:
            return []
        au_set = features[0].get("au_set") or self.au_set
        from aullava.aus.answer_format import ALL_FORMATS

        return common_prefix([self.prompt_ids(fmt, au_set)[0] for fmt in ALL_FORMATS])

    def geometry_batch(self, vectors: Sequence) -> torch.Tensor:
        """Per-face geometry vectors → one float (B, FEATURE_SIZE) tensor; a face without one is an error (the
        model would otherwise read zeros as a face shape)."""
        missing = [i for i, v in enumerate(vectors) if v is None]
        if missing:
            raise ValueError(f"this model reads face geometry, but {len(missing)} of {len(vectors)} faces have none "
                             f"(first: row {missing[0]}); build the crop cache with landmarks")
        batch = torch.as_tensor(np.stack([np.asarray(v, dtype=np.float32) for v in vectors]))
        if batch.shape[1:] != (FEATURE_SIZE,):
            raise ValueError(f"face geometry must be {FEATURE_SIZE} numbers per face, got shape {tuple(batch.shape)}")
        return batch

    def generation_inputs(self, formats: Sequence[AnswerFormat], au_set: AUSet) -> dict[str, torch.Tensor]:
        """The rows' common beginning (`prefix_ids`, 1 × P) and, per row, the rest of its text before the face, face
        placeholders and the text after it, padded on the left so every answer starts in one column; `positions`
        continue after the prefix."""
        befores = [self.prompt_ids(f, au_set)[0] for f in formats]
        prefix = common_prefix(befores)
        rows = len(formats)
        heads = [before[len(prefix):] for before in befores]
        tails = [head + [self.image_token_id] * self.num_face_tokens + self.prompt_ids(f, au_set)[1]
                 for head, f in zip(heads, formats)]
        width = max(len(t) for t in tails)
        tail_ids = torch.full((rows, width), self.pad_token_id, dtype=torch.long)
        tail_mask = torch.zeros((rows, width), dtype=torch.long)
        image_mask = torch.zeros((rows, width), dtype=torch.long)
        for row, (head, tail) in enumerate(zip(heads, tails)):
            start = width - len(tail) + len(head)
            tail_ids[row, width - len(tail):] = torch.tensor(tail)
            tail_mask[row, width - len(tail):] = 1
            image_mask[row, start:start + self.num_face_tokens] = 1
        attention = torch.cat([torch.ones((rows, len(prefix)), dtype=torch.long), tail_mask], dim=1)
        positions = (len(prefix) + tail_mask.cumsum(-1) - 1).clamp(min=len(prefix))
        return {"prefix_ids": torch.tensor([prefix]), "input_ids": tail_ids, "image_mask": image_mask,
                "attention_mask": attention, "position_ids": positions}

    def answer_vocabulary_ids(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids an answer can consist of (+ EOS), and a map from token id to its row in that list (-100
        elsewhere)."""
        if self._answer_vocab is None:
            ids = sorted({i for i, _ in answer_vocabulary(self.tokenizer)} | {self.eos_token_id})
            vocabulary = torch.tensor(ids)
            index_of = torch.full((len(self.tokenizer) + 1,), -100, dtype=torch.long)
            index_of[vocabulary] = torch.arange(len(ids))
            self._answer_vocab = (vocabulary, index_of)
        return self._answer_vocab

    def __len__(self) -> int:
        return len(self.tokenizer)


def common_prefix(sequences: Sequence[Sequence[int]]) -> list[int]:
    """The longest run of token ids every sequence starts with."""
    first = list(sequences[0])
    length = len(first)
    for seq in sequences[1:]:
        length = min(length, len(seq))
        length = next((i for i in range(length) if seq[i] != first[i]), length)
    return first[:length]


def _overlaps(offset: tuple[int, int], spans: list[tuple[int, int]]) -> bool:
    """Whether a token's character span (start, end) overlaps any of `spans`."""
    a, b = offset
    return any(a < e and s < b for s, e in spans)


def _value_spans(answer: str, mask) -> list[tuple[int, int]]:
    """Character spans of the values whose mask is False in a canonical answer like '[0.12, 0.00]'."""
    if mask is None:
        return []
    spans, start = [], 1
    for keep, token in zip(mask, answer[1:-1].split(", ")):
        if not keep:
            spans.append((start, start + len(token)))
        start += len(token) + 2
    return spans
