"""Prediction: photos and videos → faces → one constrained answer per (face, format) → typed results and tables.

Mirrors py-feat's `Detector().detect()`: a list of typed results, and `to_dataframe` for an OpenFace-style table
(`aullava.tables` has the columns). A video becomes one result per analysed frame (its index and timestamp), each
face carrying a `face_id` that follows the person across frames (`aullava.faces.tracking`). A file that fails
(missing, corrupt, no face in a photo, a broken video) gets an error entry naming it; the other files of the call
still get results. `iter_predict` hands results over chunk by chunk, so `predict` on the command line writes them as
they come and a long video killed half way keeps what was done.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from aullava.aus.answer_format import ALL_FORMATS, AnswerFormat
from aullava.aus.catalogue import AUSet
from aullava.model.config import AuLlavaConfig
from aullava.model.decoding import DEFAULT_PRECISION, AnswerDecoder, check_decoder_options, resolve_precision
from aullava.model.modeling import AuLlavaModel
from aullava.tables import to_dataframe as table_of_results

__all__ = ["FaceResult", "ImageResult", "Predictor", "default_model_dir", "load_model", "to_dataframe"]

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
    face_id: int | None = None  # a video's tracked identity (`aullava.faces.tracking`); a photo's: `face`
    confidence: float = math.nan  # the face detector's score, 0..1
    pose: tuple[float, float, float] = (math.nan, math.nan, math.nan)  # pitch, yaw, roll (degrees; see faces.detector)
    gaze: tuple[float, float] = (math.nan, math.nan)  # gaze_angle_x, gaze_angle_y (radians; see faces.gaze)
    blendshapes: dict[str, float] | None = None  # MediaPipe's 52 scores
    landmarks: np.ndarray | None = None  # (478, 3) pixels of the picture: x, y, relative depth z

    def as_dict(self, fmt: str) -> dict[str, float]:
        return dict(zip(self.au_ids, self.values[fmt].tolist()))


@dataclass
class ImageResult:
    """One photo, or one analysed frame of a video (`frame`, `timestamp` set; a failed video has one result with
    neither and `error` set). A frame without a face has no faces and no error."""

    file: str
    faces: list[FaceResult] = field(default_factory=list)
    error: str | None = None
    frame: int | None = None
    timestamp: float | None = None
    image: np.ndarray | None = field(default=None, repr=False, compare=False)  # the picture, with keep_images only
    # picture pixels per pixel of the decoded array (x, y): a photo over 2048 px is decoded reduced for detection,
    # and its boxes and landmarks are scaled back to the picture's own pixels
    scale: tuple[float, float] = (1.0, 1.0)


def _no_frames_message(name: str, source, selection) -> str:
    from aullava.faces.images import InputError
    from aullava.faces.video_frames import probe_video

    try:
        info = probe_video(source)
        length = info.duration or (info.expected_frames or 0) / (info.fps or 30.0)
        said = f" (the video is {length:.1f} s long)"
    except InputError:
        said = ""
    span = f"between {selection.start:g} s and {selection.end:g} s" if selection.end is not None else \
        f"from {selection.start:g} s on"
    return f"{name}: no frame to analyse {span}{said}"


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




class Predictor:
    """Loads the model and the face detector once; `predict` takes files, folders or arrays.

    `decoder`: "parallel" (Jacobi decoding: the same greedy answers, several times faster, with probabilities) or
    "sequential" (one token per pass: the reference). `precision`: "bf16" runs the LLM under bfloat16 autocast (faster
    where the hardware computes bf16 natively; answers may differ from fp32 where the model hesitates), "fp32", or
    "auto" (bf16 on a CPU with AVX512-BF16/AMX or a bf16 GPU, else fp32; `aullava.model.decoding.native_bf16`). `intensity`: the discrete and
    continuous values, "mean" (the expected intensity on the format's grid, the parallel decoder's default) or
    "greedy" (the digits the LLM wrote; the sequential decoder's only readout). `readout`: "exact" (the greedy answer)
    or "one-pass" (one pass over a draft; `aullava.model.decoding.AnswerDecoder` says what it returns).
    `read_ahead`: chunks of pictures a worker thread decodes and detects while the LLM reads the previous ones. A model
    loaded here gets its LoRA merged into the weights; a model passed in is left as it is."""

    def __init__(self, model: str | Path | AuLlavaModel | None = None, batch_size: int = 8,
                 device: str | None = None, detector=None, decoder: str = "parallel",
                 precision: str = DEFAULT_PRECISION, intensity: str | None = None, readout: str = "exact",
                 read_ahead: int = 2):
        intensity = check_decoder_options(decoder, precision, intensity, readout)
        owned = not isinstance(model, AuLlavaModel)
        self.model = load_model(model)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device)
        if owned:
            self.model.merge_lora()
        self.batch_size = batch_size
        self.precision = resolve_precision(precision, self.device)  # what "auto" became on this machine
        self.decoder_name, self.intensity, self.readout = decoder, intensity, readout
        self.read_ahead = read_ahead  # chunks decoded and detected ahead of the readout (0: one after the other)
        self._detector = detector
        self._answers: AnswerDecoder | None = None

    @property
    def answer_decoder(self) -> AnswerDecoder:
        if self._answers is None:
            self._answers = AnswerDecoder(self.model, decoder=self.decoder_name, precision=self.precision,
                                          intensity=self.intensity, readout=self.readout)
        return self._answers

    @property
    def parallel_decoder(self):
        """The parallel decoder itself (benchmarks count its passes); None for the sequential decoder."""
        return self.answer_decoder.parallel

    @property
    def detector(self):
        if self._detector is None:
            from aullava.faces.detector import FaceDetector

            self._detector = FaceDetector(crop_size=self.model.vision_encoder.image_size)
        return self._detector

    @property
    def trained(self) -> bool:
        return bool(self.model.config.trained)

    def _pictures(self, sources: list, selection, done: dict) -> Iterator[tuple]:
        """(result to fill, picture or None, tracker or None) per photo and per selected video frame, in order;
        what `done` lists (file → [(frame or None, boxes)], from a resumed table) is skipped, its boxes replayed
        into the video's tracker so the ids continue as in an uninterrupted run."""
        from aullava.faces.images import InputError, load_image_and_size
        from aullava.faces.tracking import FaceTracker
        from aullava.faces.video_frames import iter_video_frames

        for index, (kind, source) in enumerate(sources):
            if kind == "array":
                yield ImageResult(file=f"<array {index}>"), source, None
                continue
            name = str(source)
            written = done.get(name, [])
            if any(frame is None for frame, _ in written):
                continue  # a photo, or a video that ended in an error: finished before
            if kind == "image":
                try:
                    image, (width, height) = load_image_and_size(source)
                except InputError as err:
                    yield ImageResult(file=name, error=str(err)), None, None
                    continue
                yield ImageResult(file=name, scale=(width / image.shape[1], height / image.shape[0])), image, None
                continue
            tracker = FaceTracker()
            for _, boxes in written:
                tracker.update(boxes)
            count = 0
            try:
                for frame in iter_video_frames(source, selection, skip={f for f, _ in written}):
                    count += 1
                    yield ImageResult(file=name, frame=frame.index, timestamp=frame.timestamp), frame.image, tracker
            except InputError as err:
                yield ImageResult(file=name, error=str(err)), None, None
                continue
            if count == 0 and not written:  # e.g. --start past the end: say so rather than give no row at all
                yield ImageResult(file=name, error=_no_frames_message(name, source, selection)), None, None

    def _detect(self, result: ImageResult, image: np.ndarray, tracker, crops: list) -> None:
        from aullava.faces.images import InputError

        try:
            faces = self.detector.detect(image)
        except InputError as err:
            result.error = str(err)
            return
        if not faces and result.frame is None:
            result.error = f"{result.file}: no face found"
        ids = tracker.update([f.box for f in faces]) if tracker is not None else list(range(len(faces)))
        sx, sy = result.scale
        for face_index, (face, face_id) in enumerate(zip(faces, ids)):
            box = (face.box[0] * sx, face.box[1] * sy, face.box[2] * sx, face.box[3] * sy)
            landmarks = face.landmarks * np.array([sx, sy, sx], dtype=np.float32) if (sx, sy) != (1.0, 1.0) \
                else face.landmarks
            face_result = FaceResult(face=face_index, box=tuple(float(v) for v in box),
                                     au_ids=self.model.au_set.ids, face_id=face_id,
                                     confidence=float(face.confidence), pose=tuple(float(v) for v in face.pose),
                                     gaze=tuple(float(v) for v in face.gaze),
                                     blendshapes=dict(face.blendshapes), landmarks=landmarks)
            result.faces.append(face_result)
            crops.append((face_result, face.crop, self._geometry(face)))

    def _geometry(self, face) -> np.ndarray | None:
        """The face's geometry vector when the model reads geometry (its second stream), else None."""
        if not self.model.wants_geometry:
            return None
        from aullava.faces.geometry_features import geometry_features

        return geometry_features(face.landmarks, face.matrix, face.blendshapes, face.crop.shape[0])

    def _geometry_batch(self, vectors: list) -> torch.Tensor | None:
        return self.model.processor.geometry_batch(vectors) if self.model.wants_geometry else None

    def sources(self, inputs: Iterable[str | Path | np.ndarray]) -> list[tuple[str, object]]:
        """Inputs in order, folders expanded in place (to their photos and videos): ("array" | "image" | "video",
        item). A file without a known extension is a video when FFmpeg finds a video stream in it."""
        from aullava.faces.images import IMAGE_EXTENSIONS, is_video_path, iter_image_paths
        from aullava.faces.video_frames import is_video_file

        found = []
        for item in inputs:
            if isinstance(item, np.ndarray):
                found.append(("array", item))
                continue
            for path in iter_image_paths([item], videos=True):
                video = is_video_path(path) or (path.suffix.lower() not in IMAGE_EXTENSIONS and path.is_file()
                                                and is_video_file(path))
                found.append(("video" if video else "image", path))
        return found

    @staticmethod
    def _expected_pictures(kind: str, source, selection) -> int:
        """How many pictures a source will give, for the progress bar (a video's count is an estimate)."""
        if kind != "video":
            return 1
        from aullava.faces.images import InputError
        from aullava.faces.video_frames import probe_video

        try:
            info = probe_video(source)
        except InputError:
            return 1
        count, rate = info.expected_frames, info.fps or 30.0
        if not count:
            return 1
        last = min(count, math.ceil(selection.end * rate)) if selection.end is not None else count
        span = max(0, last - math.ceil(selection.start * rate))
        return max(1, math.ceil(span * selection.fps / rate) if selection.fps else math.ceil(span / selection.every))

    def iter_predict(self, inputs: Iterable[str | Path | np.ndarray],
                     formats: Sequence[str | AnswerFormat] = ALL_FORMATS, *, selection=None, progress: bool = False,
                     chunk: int = 64, done: dict | None = None, keep_images: bool = False) -> Iterator[list[ImageResult]]:
        """Results in input order, handed over `chunk` pictures (photos or analysed frames) at a time, so memory
        holds one chunk of pictures and crops whatever the length of a video. `selection`
        (`aullava.faces.video_frames.FrameSelection`) picks a video's frames; `done` (see `_pictures`) skips what
        a resumed table holds; `keep_images` attaches each picture to its result (for overlays)."""
        from tqdm.auto import tqdm

        from aullava.faces.video_frames import FrameSelection

        fmts = [AnswerFormat.parse(f) for f in formats]
        selection = selection or FrameSelection()
        done = done or {}
        sources = self.sources(inputs)
        total = sum(self._expected_pictures(kind, source, selection) for kind, source in sources)
        total -= sum(len(v) for v in done.values())
        unit = "frame" if any(kind == "video" for kind, _ in sources) else "photo"
        # disable=None: no bar when stderr is not a terminal (a log file would get a copy per error line)
        bar = tqdm(total=max(total, 0), disable=None if progress else True, desc=f"{unit}s", unit=unit,
                   dynamic_ncols=True)
        for pending, crops in self._detected_chunks(sources, selection, done, chunk, keep_images):
            self._read(crops, fmts)
            bar.update(len(pending))
            yield pending
        bar.total = bar.n  # the estimate becomes the count
        bar.refresh()
        bar.close()

    def _detected_chunks(self, sources, selection, done, chunk: int,
                         keep_images: bool) -> Iterator[tuple[list[ImageResult], list]]:
        """(results, their faces' crops) `chunk` pictures at a time. With `read_ahead` > 0 a worker thread decodes
        and detects up to that many chunks before the AU readout asks for them: decoding and MediaPipe (mostly one
        core, outside the GIL) overlap the LLM instead of taking turns with it. The worker stops when the consumer
        does, and an error in it is raised here."""
        def produce() -> Iterator[tuple[list[ImageResult], list]]:
            pending, crops = [], []
            for result, image, tracker in self._pictures(sources, selection, done):
                if image is not None:
                    self._detect(result, image, tracker, crops)
                    if keep_images:
                        result.image = image
                pending.append(result)
                if len(pending) >= chunk:
                    yield pending, crops
                    pending, crops = [], []
            if pending:
                yield pending, crops

        if self.read_ahead <= 0:
            yield from produce()
            return
        import queue
        import threading

        chunks: queue.Queue = queue.Queue(maxsize=self.read_ahead)
        stop = threading.Event()

        def put(item) -> bool:
            while not stop.is_set():
                try:
                    chunks.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def work() -> None:
            try:
                for item in produce():
                    if not put(item):
                        return
                put(None)
            except BaseException as err:  # handed to the consumer, raised there
                put(err)

        worker = threading.Thread(target=work, name="aullava-detect", daemon=True)
        worker.start()
        try:
            while True:
                item = chunks.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            worker.join()

    def predict(self, inputs: Iterable[str | Path | np.ndarray], formats: Sequence[str | AnswerFormat] = ALL_FORMATS,
                progress: bool = False, chunk: int = 64, selection=None) -> list[ImageResult]:
        """Every result at once (see `iter_predict`): one per photo, and one per analysed frame of a video."""
        return [r for part in self.iter_predict(inputs, formats, selection=selection, progress=progress, chunk=chunk)
                for r in part]

    def _read(self, crops: list[tuple], fmts: list[AnswerFormat]) -> None:
        """Faces batched; each face's image encoded once (parallel decoder) and every format read."""
        for offset in range(0, len(crops), self.batch_size):
            batch = crops[offset:offset + self.batch_size]
            readouts = self.answer_decoder.decode(torch.from_numpy(np.stack([crop for _, crop, _ in batch])), fmts,
                                                  geometry=self._geometry_batch([g for _, _, g in batch]))
            for (face, _, _), by_format in zip(batch, readouts):
                for fmt, readout in by_format.items():
                    face.texts[fmt.value] = readout.text
                    face.values[fmt.value] = readout.values
                    if readout.expected is not None:
                        face.expected[fmt.value] = readout.expected
                    if readout.distribution is not None:
                        face.distributions[fmt.value] = readout.distribution

    def predict_table(self, inputs, formats=ALL_FORMATS, progress: bool = False, selection=None,
                      blendshapes: bool = False, landmarks: bool = False) -> pd.DataFrame:
        return to_dataframe(self.predict(inputs, formats, progress, selection=selection), self.model.au_set, formats,
                            probabilities=self.decoder_name == "parallel", blendshapes=blendshapes,
                            landmarks=landmarks)


def to_dataframe(results: list[ImageResult], au_set: AUSet, formats: Sequence[str | AnswerFormat] = ALL_FORMATS,
                 probabilities: bool | None = None, blendshapes: bool = False, landmarks: bool = False) -> pd.DataFrame:
    """The predict table of `results` (columns: `aullava.tables`): one row per face, and one per failed file or
    faceless video frame, with `error` set for the failed ones."""
    return table_of_results(results, au_set, formats, probabilities, blendshapes, landmarks)
