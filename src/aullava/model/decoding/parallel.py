"""Parallel (Jacobi) decoding of constrained answers, with the probability of every value.

The sequential decoder (`decoding.sequential.generate_answers`) runs one narrow pass through the LLM per answer token; two of
every three tokens are forced separators. Here the whole answer is guessed (a draft), run in one wide pass, and each
position's constrained argmax is read off at once. Positions up to the first one whose argmax differs from the draft
are exactly what greedy decoding would produce (each was predicted from a prefix that greedy decoding also
produces); the argmax at the first difference is greedy's next token too. The draft is corrected there, the
key/value cache kept up to that point, and the rest run again until nothing changes. The fixed point is the
sequential greedy answer token for token — whatever the draft, which only decides how many passes it takes.

Exactness rests on the constraint being a function of the text before a position, so it is evaluated on the draft's
own prefix at every position (`AnswerGrammar`, memoised by grammar state: one of a few dozen, not the text). The
draft is tokenised by the tokenizer; if greedy decoding would pick another segmentation (e.g. "0" "." where the
draft has "0."), that simply shows up as a difference and is corrected like a wrong value.

What a face shares is computed once: the cache of the text before the face once per decoder (per format in the v3
layout), the image encoder once per face, and in the v2 layout the three formats branch from one description + face
state. At the fixed point every position's distribution was computed from the
greedy prefix before it, which gives the probabilities (`Readout`) at no extra cost.

The constraint and the drafts are `decoding.grammar`; turning the fixed point's distributions into values and
probabilities is `decoding.readout`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from aullava.aus.answer_format import ALL_FORMATS, AnswerFormat, parse_answer
from aullava.aus.catalogue import AUSet
from aullava.model.decoding.grammar import AnswerGrammar, draft_values, repair_value
from aullava.model.decoding.readout import INTENSITY_READOUTS, Readout, first_digit, read_out
from aullava.model.decoding.vocabulary import answer_vocabulary
from aullava.model.llm import final_logits

KVState = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (keys, values), each (rows, heads, length, dim)


@dataclass
class _Row:
    accepted: list[int]  # greedy tokens, verified
    draft: list[int]  # the guessed rest of the answer
    passes: int = 0
    dists: dict[int, tuple[tuple[int, ...], np.ndarray]] = field(default_factory=dict)  # position → (ids, probs)


REGROUP_GAP = 8  # answer tokens: rows whose corrections start this much later than a group's first run apart


def _cut_groups(cuts: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """Sorted (cut, row) pairs split where a cut lies more than `REGROUP_GAP` tokens after its group's first."""
    groups: list[list[tuple[int, int]]] = []
    for cut, row in cuts:
        if groups and cut - groups[-1][0][0] <= REGROUP_GAP:
            groups[-1].append((cut, row))
        else:
            groups.append([(cut, row)])
    return groups


class ParallelDecoder:
    """Decodes answers for batches of face crops; holds the description's key/value cache for reuse across calls.

    Build it again after changing the model's weights (the cache would be stale). `intensity`: how discrete and
    continuous values are read out, "mean" (the expectation on the format's grid) or "greedy" (the text's digits)."""

    def __init__(self, model, au_set: AUSet | None = None, autocast_dtype: torch.dtype | None = None,
                 intensity: str = "mean", one_pass: bool = False):
        if intensity not in INTENSITY_READOUTS:
            raise ValueError(f"unknown intensity readout {intensity!r}; expected "
                             f"{', '.join(INTENSITY_READOUTS)}")
        self.model = model
        self.intensity = intensity
        self.one_pass = one_pass
        self.au_set = au_set or model.au_set
        self.tokenizer = model.tokenizer
        self.autocast_dtype = autocast_dtype
        self.grammars = {f: AnswerGrammar(self.tokenizer, f, len(self.au_set)) for f in ALL_FORMATS}
        self.device = next(model.parameters()).device
        vocabulary = sorted({i for i, _ in answer_vocabulary(self.tokenizer)} | {self.tokenizer.eos_token_id})
        self.vocabulary = torch.tensor(vocabulary, device=self.device)
        self.column = {token: column for column, token in enumerate(vocabulary)}
        # the text before the face, per format: one description for all three in the v2 layout, one
        # description + question per format in v3; each distinct one's cache is computed once
        self.before_ids = {f: tuple(model.processor.prompt_ids(f, self.au_set)[0]) for f in ALL_FORMATS}
        self._prefixes: dict[tuple[int, ...], KVState] = {}
        self.encoder_calls = 0  # faces through the vision encoder (the tests count them)
        self.temperature = dict(model.config.probability_temperature or {})
        self.bias = dict(model.config.probability_bias or {})
        config = model.config
        self.present_weights = np.array([float((config.present_weights or {}).get(au, config.present_weight))
                                         for au in self.au_set.ids])
        # the draft head guesses the model's own AU set; one pass reads each value given its draft, so it keeps
        # the all-absent draft its answers are defined by
        self._drafts_from_head = (getattr(model, "draft_head", None) is not None and not one_pass
                                  and tuple(self.au_set.ids) == tuple(model.au_set.ids))

    # ----- model passes --------------------------------------------------------------------------------------
    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _run(self, state: KVState | None, start: int, input_ids: torch.Tensor | None = None,
             embeds: torch.Tensor | None = None) -> tuple[torch.Tensor, KVState]:
        """One pass of the decoder over new tokens after a cache of length `start` (every row the same length).

        The cache holds every layer in full (no sliding-window truncation), so it can be cut back to any length;
        the attention masks still apply each layer's window."""
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        cache = DynamicCache()
        if state is not None:
            for keys, values in state:
                layer = DynamicLayer()
                layer.lazy_initialization(keys, values)
                layer.keys, layer.values = keys, values
                cache.layers.append(layer)
        width = (input_ids if input_ids is not None else embeds).shape[1]
        rows = (input_ids if input_ids is not None else embeds).shape[0]
        positions = torch.arange(start, start + width, device=self.device).expand(rows, width)
        with self._autocast():
            hidden = self.model.language_model.get_decoder()(
                input_ids=input_ids, inputs_embeds=embeds, position_ids=positions, cache=cache,
                use_cache=True).last_hidden_state
        return hidden, [(layer.keys, layer.values) for layer in cache.layers]

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return final_logits(self.model.language_model, hidden, self.vocabulary).float()

    def prefix_state(self, before: tuple[int, ...], rows: int) -> KVState:
        if before not in self._prefixes:
            ids = torch.tensor([list(before)], device=self.device)
            with torch.no_grad():
                self._prefixes[before] = self._run(None, 0, input_ids=ids)[1]
        return [(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in self._prefixes[before]]

    @torch.no_grad()
    def face_embeds(self, crops: torch.Tensor, geometry: torch.Tensor | None = None) -> torch.Tensor:
        """The faces' tokens (image, then geometry for a model with that stream) as LLM input embeddings."""
        model = self.model
        self.encoder_calls += crops.shape[0]
        with self._autocast():
            visual = model.face_tokens(crops.to(self.device), geometry)
        return visual.to(model.language_model.get_input_embeddings().weight.dtype)

    @torch.no_grad()
    def face_state(self, embeds: torch.Tensor, before: tuple[int, ...]) -> KVState:
        """The text before the face + the face's tokens, one row per face: the state a format's answer starts from
        (the three formats branch from one such state in the v2 layout)."""
        return self._run(self.prefix_state(before, embeds.shape[0]), len(before), embeds=embeds)[1]

    # ----- decoding ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, crops: torch.Tensor, formats: Sequence[AnswerFormat | str] = ALL_FORMATS,
               drafts: dict[AnswerFormat, list[np.ndarray]] | None = None,
               geometry: torch.Tensor | None = None) -> list[dict[AnswerFormat, Readout]]:
        """Every format for every face of `crops` (uint8 (B, S, S, 3)); one dict format → Readout per face.
        `geometry` (B, FEATURE_SIZE): the faces' geometry, for a model with the geometry stream.

        Formats are decoded in order; by default each draft is the answer already decoded for the previous format
        of the same face (converted by the format rules); the first is the model's draft head's guess
        (`aullava.model.draft_head`) where it has one and the readout is exact, else all absent."""
        formats = [AnswerFormat.parse(f) for f in formats]
        embeds = self.face_embeds(crops, geometry)
        faces: dict[tuple[int, ...], KVState] = {}
        results: list[dict[AnswerFormat, Readout]] = [{} for _ in range(crops.shape[0])]
        previous: list[np.ndarray] | None = None
        for fmt in formats:
            if drafts is not None and fmt in drafts:
                guesses = drafts[fmt]
            elif previous is not None:
                guesses = previous
            elif self._drafts_from_head:
                guesses = [(vector, AnswerFormat.BINARY) for vector in self.model.draft_head.draft(embeds)]
            else:
                guesses = [np.zeros(len(self.au_set), dtype=np.float32)] * crops.shape[0]
            before = self.before_ids[fmt]
            if before not in faces:
                faces[before] = self.face_state(embeds, before)
            start = len(before) + self.model.num_face_tokens
            readouts = self._decode_format(faces[before], start, fmt, [draft_values(g, fmt) for g in guesses])
            for face, readout in enumerate(readouts):
                results[face][fmt] = readout
            previous = [(parse_answer(r.text, fmt, len(self.au_set)), fmt) for r in readouts]  # greedy drafts
        return results

    def _tokens(self, text: str) -> list[int]:
        """Token ids whose texts concatenate to `text`, preferring the tokenizer's own segmentation."""
        grammar = self.grammars[AnswerFormat.BINARY]
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        if "".join(grammar.text_of.get(i, "\0") for i in ids) == text:
            return ids
        single = {t: i for i, t in grammar.vocab if len(t) == 1}
        return [single[c] for c in text]

    def _decode_format(self, faces: KVState, start: int, fmt: AnswerFormat,
                       guesses: list[list[str]]) -> list[Readout]:
        grammar = self.grammars[fmt]
        question = self.model.processor.prompt_ids(fmt, self.au_set)[1]
        rows = [_Row(accepted=[], draft=self._tokens(grammar.complete("", g))) for g in guesses]
        # The first pass runs the question with the drafts. Rows still being corrected after it are regrouped by
        # where their correction starts (`fed_from`, in answer tokens): each group runs again from its own earliest
        # correction, on the cache cut back to that point, so a row wrong near its end does not re-run the answer
        # of a row wrong near its start (on a CPU the cost is the tokens run, not the number of passes).
        groups = [(faces, -len(question), list(range(len(rows))))]
        while groups:
            state, fed_from, active = groups.pop()
            sequences = [rows[r].accepted + rows[r].draft for r in active]
            needed = [self._needed_length(grammar, seq) for seq in sequences]
            width = max(max(needed) - fed_from, 1)
            ids = torch.full((len(active), width), self.tokenizer.pad_token_id, dtype=torch.long)
            for i, seq in enumerate(sequences):
                segment = (question if fed_from < 0 else []) + seq[max(fed_from, 0):needed[i]]
                ids[i, :len(segment)] = torch.tensor(segment, dtype=torch.long)
            cached = start + len(question) + fed_from
            hidden, state = self._run(state, cached, input_ids=ids.to(self.device))
            logits = self._logits(hidden).cpu().numpy()  # logits[:, k] predict answer token fed_from + k + 1
            if self.one_pass:
                return [self._one_pass(grammar, fmt, rows[r], sequences[i], logits[i][len(question) - 1:])
                        for i, r in enumerate(active)]
            cuts = []
            for i, r in enumerate(active):
                first_wrong = self._verify(grammar, rows[r], sequences[i], logits[i], fed_from)
                if first_wrong is not None:  # the cache holds this row's real tokens only up to what was fed
                    cuts.append((min(first_wrong, needed[i]), i))
            for group in _cut_groups(sorted(cuts)):
                keep_until = group[0][0]
                index = torch.tensor([i for _, i in group], device=self.device)
                length = start + len(question) + keep_until
                groups.append(([(k[index, :, :length], v[index, :, :length]) for k, v in state], keep_until,
                               [active[i] for _, i in group]))
        return [read_out(grammar, fmt, row.accepted, row.dists, self.present_weights, self.intensity, row.passes)
                for row in rows]

    def _one_pass(self, grammar: AnswerGrammar, fmt: AnswerFormat, row: _Row, seq: list[int],
                  logits: np.ndarray) -> Readout:  # logits[j]: the prediction of answer token j
        """The readout of one pass over the draft `seq`: at every value position the distribution given the draft's
        values before it (not the model's own greedy values: no cascade of an earlier flip), the answer from each
        position's constrained argmax (binary, discrete; a continuous value's argmax digits made valid), and the
        expectations along the draft. Not the greedy text in general."""
        texts = [grammar.text_of[t] for t in seq]
        text, chosen = "", []
        for j, token in enumerate(seq):
            allowed = grammar.allowed(text)
            if len(allowed) > 1 and j < logits.shape[0]:
                scores = logits[j, [self.column[t] for t in allowed]]
                row.dists[j] = (allowed, self._calibrated(grammar, allowed, scores))
                chosen.append(grammar.text_of[allowed[int(np.argmax(scores))]])
                text += texts[j]
                continue
            chosen.append(texts[j])
            text += texts[j]
        readout = read_out(grammar, fmt, seq, row.dists, self.present_weights, self.intensity, passes=1)
        values = [repair_value(v, grammar) for v in "".join(chosen)[1:-1].split(", ")]
        if len(values) != grammar.num_aus:  # a token that spans a separator changed: keep the draft's layout
            values = "".join(texts)[1:-1].split(", ")
        answer = "[" + ", ".join(values) + "]"
        readout.text = answer
        if fmt is AnswerFormat.BINARY or self.intensity == "greedy":
            readout.values = parse_answer(answer, fmt, grammar.num_aus)
        return readout

    def _needed_length(self, grammar: AnswerGrammar, seq: list[int]) -> int:
        """Answer tokens to feed: those before the last position whose token is not forced (a forced token needs
        no prediction)."""
        text, needed = "", 0
        for j, token in enumerate(seq):
            if len(grammar.allowed(text)) > 1:
                needed = j
            text += grammar.text_of[token]
        return needed

    def _calibrated(self, grammar: AnswerGrammar, allowed: list[int], scores: np.ndarray) -> np.ndarray:
        """Softmax of the allowed tokens' logits divided by the format's temperature, with the binary log-odds shift
        added to the tokens whose value digit is 1 (Platt scaling, fitted by `aullava calibrate`)."""
        z = scores / self.temperature.get(grammar.fmt.value, 1.0)
        shift = self.bias.get(grammar.fmt.value, 0.0)
        if shift:
            z = z + shift * np.array([first_digit(grammar.text_of[t]) == "1" for t in allowed], dtype=z.dtype)
        probs = np.exp(z - z.max())
        return probs / probs.sum()

    def _verify(self, grammar: AnswerGrammar, row: _Row, seq: list[int], logits: np.ndarray,
                fed_from: int) -> int | None:
        """Constrained argmax at every position this pass predicted, each under the draft's own prefix. Up to the
        first difference from the draft they are greedy's tokens; there the draft is corrected, the values after it
        are guessed from this pass's argmaxes (made from a slightly wrong prefix, usually right anyway: Jacobi
        iteration), and the position is returned. None when the whole answer is verified."""
        row.passes += 1
        first = 0 if fed_from < 0 else fed_from + 1
        texts = [grammar.text_of[t] for t in seq]
        text = "".join(texts[:first])
        argmax: dict[int, int] = {}
        wrong = None
        for j in range(first, len(seq) + 1):
            allowed, columns = grammar.allowed(text), None
            if len(allowed) == 1:
                best = allowed[0]
            elif j - fed_from - 1 >= logits.shape[0]:
                break  # not predicted in this pass (beyond what was fed for this row): only after `wrong`
            else:
                columns = [self.column[t] for t in allowed]
                scores = logits[j - fed_from - 1, columns]
                best = allowed[int(np.argmax(scores))]
                if wrong is None:  # probabilities under the model's calibration; the argmax (the answer) is unchanged
                    row.dists[j] = (allowed, self._calibrated(grammar, allowed, scores))
            if wrong is None and (j == len(seq) or best != seq[j]):
                wrong = j
                if j == len(seq):
                    break
                correction = best
            argmax[j] = best
            if j < len(seq):
                text += texts[j]
        if wrong is None or (wrong == len(seq)):
            row.accepted, row.draft = seq, []
            return None
        # guessed values: the draft's text with each digit replaced by the digit argmax predicted at its place
        guessed = list("".join(texts))
        offset = sum(len(t) for t in texts[:wrong + 1])
        for k in range(wrong + 1, len(seq)):
            for c, predicted in enumerate(grammar.text_of[argmax[k]] if k in argmax else ""):
                at = offset + c
                if at >= len(guessed) or not (guessed[at] in "0123456789" and predicted in "0123456789"):
                    break
                guessed[at] = predicted
            offset += len(texts[k])
        values = "".join(guessed)[1:-1].split(", ")
        fallback = "0.00" if grammar.fmt is AnswerFormat.CONTINUOUS else "0"
        guesses = [repair_value(v, grammar) for v in values]
        if len(guesses) != grammar.num_aus:
            guesses = [fallback] * grammar.num_aus
        row.accepted = seq[:wrong] + [correction]
        row.draft = self._tokens(grammar.complete("".join(texts[:wrong]) + grammar.text_of[correction], guesses))
        return wrong
