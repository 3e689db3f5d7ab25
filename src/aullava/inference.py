"""Prediction: image files → faces → one constrained answer per (face, format) → typed results and tables.

Mirrors py-feat's `Detector().detect()`: a list of typed results, and `to_dataframe` for an OpenFace-style table
(`AU01_c` occurrence 0/1, `AU01_r` intensity 0–5, `AU01_i` intensity 0–1, and the probability columns `AU01_p`,
`AU01_r_mean`, `AU01_i_mean`). A file that fails (missing, corrupt, no
face) gets an error entry naming it; the other files of the call still get results.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from aullava.answer_format import ALL_FORMATS, AnswerFormat, parse_answer
from aullava.au_catalogue import AUSet
from aullava.model.config import AuLlavaConfig
from aullava.model.generation import generate_answers
from aullava.model.modeling import AuLlavaModel

log = logging.getLogger(__name__)



@dataclass
class FaceResult:
    face: int
    box: tuple[float, float, float, float]
    au_ids: tuple[str, ...]
    values: dict[str, np.ndarray] = field(default_factory=dict)  # format name → vector in AU order
    texts: dict[str, str] = field(default_factory=dict)  # format name → the model's raw answer
    # format name → per AU, the expectation of the model's distribution over the value (parallel readout only):
    # binary p(present), discrete expected intensity 0–5, continuous expected intensity 0–1
    expected: dict[str, np.ndarray] = field(default_factory=dict)
    # format name → (AUs × values) distribution: binary over (0, 1), discrete over 0..5
    distributions: dict[str, np.ndarray] = field(default_factory=dict)

    def as_dict(self, fmt: str) -> dict[str, float]:
        return dict(zip(self.au_ids, self.values[fmt].tolist()))


@dataclass
class ImageResult:
    file: str
    faces: list[FaceResult] = field(default_factory=list)
    error: str | None = None


def default_model_dir() -> Path | None:
    """The shipped trained default, or None while the package carries none."""
    from importlib.resources import files

    path = Path(str(files("aullava").joinpath("resources", "default_model")))
    return path if (path / "config.json").is_file() else None


def load_model(model: str | Path | AuLlavaModel | None = None) -> AuLlavaModel:
    if isinstance(model, AuLlavaModel):
        return model.eval()
    path = Path(model) if model is not None else default_model_dir()
    if path is not None:
        return AuLlavaModel.from_pretrained(path)
    warnings.warn("no trained default model is installed: using the UNTRAINED default (pretrained Gemma-3-270M and "
                  "EfficientNet-Lite0, random projector); its AU values are meaningless", stacklevel=2)
    torch.manual_seed(0)  # the untrained projector is at least reproducible
    return AuLlavaModel(AuLlavaConfig()).eval()


DECODERS = ("parallel", "sequential")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


class Predictor:
    """Loads the model and the face detector once; `predict` takes files, folders or arrays.

    `decoder`: "parallel" (Jacobi decoding: the same greedy answers, several times faster, with probabilities) or
    "sequential" (one token per pass: the reference). `precision` "bf16" runs the LLM under bfloat16 autocast (faster
    on CPUs with AMX; answers may differ from fp32 where the model hesitates). A model loaded here gets its LoRA
    merged into the weights; a model passed in is left as it is."""

    def __init__(self, model: str | Path | AuLlavaModel | None = None, batch_size: int = 8,
                 device: str | None = None, detector=None, decoder: str = "parallel", precision: str = "fp32"):
        if decoder not in DECODERS:
            raise ValueError(f"unknown decoder {decoder!r}; expected one of {', '.join(DECODERS)}")
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
        owned = not isinstance(model, AuLlavaModel)
        self.model = load_model(model)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device)
        if owned:
            self.model.merge_lora()
        self.batch_size = batch_size
        self.decoder_name, self.precision = decoder, precision
        self._detector = detector
        self._parallel = None

    @property
    def parallel_decoder(self):
        if self._parallel is None:
            from aullava.model.parallel_decoding import ParallelDecoder

            self._parallel = ParallelDecoder(self.model, autocast_dtype=PRECISIONS[self.precision])
        return self._parallel

    @property
    def detector(self):
        if self._detector is None:
            from aullava.faces.detector import FaceDetector

            self._detector = FaceDetector(crop_size=self.model.vision_encoder.image_size)
        return self._detector

    @property
    def trained(self) -> bool:
        return bool(self.model.config.trained)

    def _faces(self, sources: list[Path | np.ndarray], first_index: int = 0) -> tuple[list[ImageResult], list[tuple]]:
        from aullava.faces.images import InputError, load_image

        results, crops = [], []
        for index, source in enumerate(sources, start=first_index):
            name = f"<array {index}>" if isinstance(source, np.ndarray) else str(source)
            result = ImageResult(file=name)
            results.append(result)
            try:
                image = source if isinstance(source, np.ndarray) else load_image(source)
                faces = self.detector.detect(image)
            except InputError as err:
                result.error = str(err)
                continue
            if not faces:
                result.error = f"{name}: no face found"
                continue
            for face_index, face in enumerate(faces):
                face_result = FaceResult(face=face_index, box=tuple(float(v) for v in face.box),
                                         au_ids=self.model.au_set.ids)
                result.faces.append(face_result)
                crops.append((face_result, face.crop, self._geometry(face)))
        return results, crops

    def _geometry(self, face) -> np.ndarray | None:
        """The face's geometry vector when the model reads geometry (its second stream), else None."""
        if not self.model.wants_geometry:
            return None
        from aullava.face_geometry import geometry_features

        return geometry_features(face.landmarks, face.matrix, face.blendshapes, face.crop.shape[0])

    def _geometry_batch(self, vectors: list) -> torch.Tensor | None:
        return self.model.processor.geometry_batch(vectors) if self.model.wants_geometry else None

    def predict(self, inputs: Iterable[str | Path | np.ndarray], formats: Sequence[str | AnswerFormat] = ALL_FORMATS,
                progress: bool = False, chunk: int = 64) -> list[ImageResult]:
        """Images are read and their faces cropped `chunk` images at a time, so a large folder never holds more
        than one chunk of crops in memory."""
        from tqdm.auto import tqdm

        from aullava.faces.images import iter_image_paths

        fmts = [AnswerFormat.parse(f) for f in formats]
        sources: list[Path | np.ndarray] = []
        for item in inputs:  # input order is kept; folders expand in place
            sources.extend([item] if isinstance(item, np.ndarray) else iter_image_paths([item]))
        n = len(self.model.au_set)
        results: list[ImageResult] = []
        bar = tqdm(total=len(sources), disable=not progress, desc="images", unit="img")
        for start in range(0, len(sources), chunk):
            chunk_results, crops = self._faces(sources[start:start + chunk], first_index=start)
            if self.decoder_name == "parallel":
                self._read_parallel(crops, fmts)
            else:
                self._read_sequential(crops, fmts, n)
            results.extend(chunk_results)
            bar.update(len(chunk_results))
        bar.close()
        return results

    def _read_parallel(self, crops: list[tuple], fmts: list[AnswerFormat]) -> None:
        """Faces batched, each face's image encoded once and its formats branched from it."""
        for offset in range(0, len(crops), self.batch_size):
            batch = crops[offset:offset + self.batch_size]
            readouts = self.parallel_decoder.decode(torch.from_numpy(np.stack([crop for _, crop, _ in batch])), fmts,
                                                    geometry=self._geometry_batch([g for _, _, g in batch]))
            for (face, _, _), by_format in zip(batch, readouts):
                for fmt, readout in by_format.items():
                    face.texts[fmt.value] = readout.text
                    face.values[fmt.value] = readout.values
                    face.expected[fmt.value] = readout.expected
                    if readout.distribution is not None:
                        face.distributions[fmt.value] = readout.distribution

    def _read_sequential(self, crops: list[tuple], fmts: list[AnswerFormat], n: int) -> None:
        jobs = [(face, crop, fmt, geometry) for face, crop, geometry in crops for fmt in fmts]
        for offset in range(0, len(jobs), self.batch_size):
            batch = jobs[offset:offset + self.batch_size]
            crops_t = torch.from_numpy(np.stack([crop for _, crop, _, _ in batch]))
            with torch.autocast(self.device.type, dtype=PRECISIONS[self.precision],
                                enabled=PRECISIONS[self.precision] is not None):
                texts = generate_answers(self.model, crops_t, [fmt for _, _, fmt, _ in batch],
                                         geometry=self._geometry_batch([g for _, _, _, g in batch]))
            for (face, _, fmt, _), text in zip(batch, texts):
                face.texts[fmt.value] = text
                face.values[fmt.value] = parse_answer(text, fmt, n)

    def predict_table(self, inputs, formats=ALL_FORMATS, progress: bool = False) -> pd.DataFrame:
        return to_dataframe(self.predict(inputs, formats, progress), self.model.au_set, formats,
                            probabilities=self.decoder_name == "parallel")


def to_dataframe(results: list[ImageResult], au_set: AUSet, formats: Sequence[str | AnswerFormat] = ALL_FORMATS,
                 probabilities: bool | None = None) -> pd.DataFrame:
    """One row per face (and one per failed file, with `error` set). Per AU and format, the answer (`AU01_c` 0/1,
    `AU01_r` 0–5, `AU01_i` 0–1) and, with `probabilities`, the model's expectation over that value (`AU01_p`
    p(present), `AU01_r_mean`, `AU01_i_mean`; see `AnswerFormat.table_suffix` / `expectation_suffix`).
    `probabilities=None` includes them when the results carry them (the parallel decoder's)."""
    fmts = [AnswerFormat.parse(f) for f in formats]
    if probabilities is None:
        probabilities = any(fmt.value in face.expected for r in results for face in r.faces for fmt in fmts)
    columns = {fmt: au_set.openface_columns(fmt.table_suffix) for fmt in fmts}
    expected = {fmt: au_set.openface_columns(fmt.expectation_suffix) for fmt in fmts} if probabilities else {}
    rows = []
    for result in results:
        if result.error is not None:
            rows.append({"file": result.file, "face": -1, "error": result.error})
            continue
        for face in result.faces:
            row = {"file": result.file, "face": face.face, "x0": face.box[0], "y0": face.box[1],
                   "x1": face.box[2], "y1": face.box[3]}
            for fmt in fmts:
                cast = float if fmt is AnswerFormat.CONTINUOUS else int
                row.update({col: cast(v) for col, v in zip(columns[fmt], face.values[fmt.value])})
                if fmt in expected and fmt.value in face.expected:
                    row.update(zip(expected[fmt], face.expected[fmt.value].astype(float).tolist()))
            row["error"] = None
            rows.append(row)
    # every column always, in one order, so tables of different inputs (or ranks' shards) line up
    names = ["file", "face", "x0", "y0", "x1", "y1", *(c for fmt in fmts for c in columns[fmt]),
             *(c for fmt in fmts for c in expected.get(fmt, ())), "error"]
    return pd.DataFrame(rows, columns=names)
