"""The web app: `POST /predict` (an uploaded photo, or a short video where the predictor reads videos → the predict
table's rows as JSON, plus per face the raw answers and probabilities), `GET /health`, and `GET /` a page that draws
the face boxes and per-AU bars (static HTML/JS/CSS shipped in the package: the page works offline).

Starlette with uvicorn rather than FastAPI: three routes need no validation or dependency-injection layer, and
FastAPI's main gift to API users, the interactive docs at /docs, loads Swagger UI from a CDN that an offline machine
cannot reach; the README documents the API instead (a curl example). Starlette is what FastAPI is built on, so moving
up later costs little.

The model is loaded once; requests run it in a worker thread, one at a time (on a CPU, two at once would only share
the same cores, each twice as slow), photos first: a video is read `VIDEO_CHUNK` frames at a time and a waiting
photo goes between two chunks (`Turns`). Videos longer than the server's limits (seconds, frames) are refused
before any work, and a request whose client disconnects stops at its next chunk. An upload lives in a temporary
folder for the length of its request; nothing is written anywhere else.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import tempfile
import threading
from pathlib import Path

import anyio.to_thread
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from aullava.aus.answer_format import ALL_FORMATS
from aullava.faces.images import IMAGE_EXTENSIONS, InputError, load_image_and_size
from aullava.inference import Predictor, to_dataframe

STATIC = Path(__file__).parent / "static"
DEFAULT_MAX_UPLOAD_MB = 20.0
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and part headers around the file, allowed on top of the limit
DRAIN_CAP = 512 * 1024 * 1024  # read (and drop) at most this much of a refused upload, so the client sees the 413
DEFAULT_MAX_VIDEO_SECONDS = 60.0
DEFAULT_MAX_VIDEO_FRAMES = 900  # 30 s at 30 fps: every frame of a video is analysed
VIDEO_CHUNK = 4  # analysed frames between two turns: a waiting photo waits at most this many frames
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv"})


def reads_videos() -> bool:
    """Whether this installation's `Predictor` takes video files (per-frame rows with frame, timestamp, face_id).
    Until it does, a video upload is answered 415; the video reader that makes it possible brings
    `aullava.faces.video_frames`."""
    try:
        from aullava.faces import video_frames  # noqa: F401
    except ImportError:
        return False
    return True


class UploadTooLarge(Exception):
    pass


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _finite(values) -> list:
    """Floats for JSON: NaN/inf (an AU without a probability) become null."""
    return [None if isinstance(v, float) and not math.isfinite(v) else v for v in values.tolist()]


def _sniff_image(data: bytes) -> str | None:
    """'.png', '.jpeg' … for bytes PIL recognises as an image (a name without a known extension), else None."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return "." + (im.format or "").lower() if im.format else None
    except Exception:  # noqa: BLE001 - not an image PIL knows
        return None


class Cancelled(Exception):
    """The client went away: its work stopped between two chunks."""


class Turns:
    """One model, one request at a time, photos first: a video is read a few frames at a time and gives way between
    chunks to every photo that is waiting, so a long video never holds a photo for more than one chunk."""

    def __init__(self):
        self._cond = threading.Condition()
        self._busy = False
        self._photos_waiting = 0

    def photo(self):
        return self._turn(photo=True)

    def video_chunk(self):
        return self._turn(photo=False)

    @contextlib.contextmanager
    def _turn(self, photo: bool):
        with self._cond:
            self._photos_waiting += photo
            try:
                self._cond.wait_for(lambda: not self._busy and (photo or self._photos_waiting == 0))
            finally:
                self._photos_waiting -= photo
            self._busy = True
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()


class Service:
    """The predictor, its turns and the settings one server run keeps."""

    def __init__(self, predictor: Predictor, model_name: str = "default",
                 max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * 1e6),
                 max_video_seconds: float = DEFAULT_MAX_VIDEO_SECONDS, max_video_frames: int = DEFAULT_MAX_VIDEO_FRAMES):
        self.predictor, self.model_name, self.max_upload_bytes = predictor, model_name, max_upload_bytes
        self.max_video_seconds, self.max_video_frames = max_video_seconds, max_video_frames
        self.turns = Turns()
        self.videos = reads_videos()

    def health(self) -> dict:
        au_set = self.predictor.model.au_set
        return {"status": "ok", "model": self.model_name, "trained": self.predictor.trained,
                "au_set": au_set.name, "aus": [{"id": a.id, "name": a.name} for a in au_set.aus],
                "formats": [f.value for f in ALL_FORMATS], "videos": self.videos,
                "max_upload_bytes": self.max_upload_bytes, "max_video_seconds": self.max_video_seconds,
                "max_video_frames": self.max_video_frames}

    def predict_image(self, data: bytes, suffix: str, name: str, formats: list[str],
                      cancelled: threading.Event | None = None) -> tuple[int, dict]:
        with _upload(data, suffix) as path:
            try:
                width, height = load_image_and_size(path)[1]  # the picture's size: what the face boxes refer to
            except InputError as err:
                return 422, {"error": f"{name}: {err.reason}"}
            with self.turns.photo():
                if cancelled is not None and cancelled.is_set():
                    raise Cancelled
                result = self.predictor.predict([path], formats)[0]
            table = _as_uploaded(to_dataframe([result], self.predictor.model.au_set, formats), path, name)
        error = result.error.replace(str(path), name) if result.error else None
        faces = [{"face": f.face, "box": list(f.box), "values": {k: _finite(v) for k, v in f.values.items()},
                  "expected": {k: _finite(v) for k, v in f.expected.items()}, "texts": f.texts}
                 for f in result.faces]
        return 200, {"file": name, "kind": "image", "image_size": [width, height], "formats": formats,
                     "aus": list(self.predictor.model.au_set.ids), "columns": list(table.columns),
                     "rows": json.loads(table.to_json(orient="records")), "faces": faces, "error": error}

    def predict_video(self, data: bytes, suffix: str, name: str, formats: list[str],
                      cancelled: threading.Event | None = None) -> tuple[int, dict]:
        from aullava.faces.video_frames import probe_video

        with _upload(data, suffix) as path:
            try:
                info = probe_video(path)
            except InputError as err:
                return 422, {"error": f"{name}: {err.reason}"}
            seconds = info.duration or (info.expected_frames or 0) / (info.fps or 30.0)
            if seconds > self.max_video_seconds:
                return 413, {"error": f"{name}: {seconds:.1f} s of video; this server reads up to "
                                      f"{self.max_video_seconds:g} s (aullava serve --max-video-seconds)"}
            frames = info.expected_frames or 0
            if frames > self.max_video_frames:
                return 413, {"error": f"{name}: {frames} frames; this server reads up to {self.max_video_frames} "
                                      "(aullava serve --max-video-frames; or send a shorter clip)"}
            parts = []
            chunks = self.predictor.iter_predict([path], formats, chunk=VIDEO_CHUNK)
            try:
                while True:
                    with self.turns.video_chunk():  # photos waiting go first, between chunks
                        if cancelled is not None and cancelled.is_set():
                            raise Cancelled
                        part = next(chunks, None)
                    if part is None:
                        break
                    parts += part
            finally:
                chunks.close()
        table = _as_uploaded(to_dataframe(parts, self.predictor.model.au_set, formats), path, name)
        if len(parts) == 1 and parts[0].error and parts[0].frame is None:
            return 422, {"error": table["error"].iloc[0]}
        return 200, {"file": name, "kind": "video", "formats": formats, "aus": list(self.predictor.model.au_set.ids),
                     "columns": list(table.columns), "rows": json.loads(table.to_json(orient="records"))}


@contextlib.contextmanager
def _upload(data: bytes, suffix: str):
    """The uploaded bytes as a file in a temporary folder, for the length of the request."""
    with tempfile.TemporaryDirectory(prefix="aullava-serve-") as folder:
        path = Path(folder) / f"upload{suffix}"
        path.write_bytes(data)
        yield path


def _as_uploaded(table, path: Path, name: str):
    """The table's rows named as the client named the file (never the server's temporary path)."""
    table["file"] = name
    if "error" in table.columns:
        table["error"] = table["error"].map(lambda e: e.replace(str(path), name) if isinstance(e, str) else e)
    return table


async def _run_watched(request: Request, work, *args):
    """Runs `work(*args, cancelled)` in a worker thread; if the client disconnects meanwhile, `cancelled` is set and
    the work stops at its next chunk."""
    cancelled = threading.Event()
    outcome: dict = {}

    async def run() -> None:
        try:
            outcome["value"] = await anyio.to_thread.run_sync(work, *args, cancelled)
        except Cancelled:
            outcome["value"] = (499, {"error": "the client went away"})
        finally:
            group.cancel_scope.cancel()

    async def watch() -> None:
        while not cancelled.is_set():
            if await request.is_disconnected():
                cancelled.set()
                return
            await anyio.sleep(0.25)

    async with anyio.create_task_group() as group:
        group.start_soon(run)
        group.start_soon(watch)
    return outcome.get("value", (499, {"error": "the client went away"}))


def _formats(request: Request, form) -> list[str]:
    """`formats` from the form or the query string: repeated or comma-separated; all three when not given."""
    given = [*form.getlist("formats"), *request.query_params.getlist("formats")]
    names = [n.strip().lower() for item in given for n in str(item).split(",") if n.strip()]
    if not names:
        return [f.value for f in ALL_FORMATS]
    unknown = [n for n in names if n not in {f.value for f in ALL_FORMATS}]
    if unknown:
        raise ValueError(f"unknown format {unknown[0]!r}; use binary, discrete or continuous")
    return [f.value for f in ALL_FORMATS if f.value in names]  # canonical order, no repeats


async def _drain(receive) -> None:
    """Reads what is left of a refused request body, so the client is not cut off before it reads the answer."""
    seen = 0
    while seen < DRAIN_CAP:
        message = await receive()
        if message["type"] != "http.request":
            return
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def create_app(service: Service) -> Starlette:
    limit = service.max_upload_bytes
    accepted = "a photo (.jpg, .png, .webp, .bmp, .tif …)" + (" or a video (.mp4, .mov, .avi, .mkv, .webm …)"
                                                              if service.videos else "")
    too_large = f"upload too large: this server takes files up to {limit / 1e6:g} MB (aullava serve --max-upload-mb)"

    async def health(request: Request) -> JSONResponse:
        return JSONResponse(service.health())

    async def predict(request: Request) -> JSONResponse:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit + FORM_OVERHEAD:
            await _drain(request.receive)
            return _error(413, too_large)
        received = 0

        async def counted():  # a body without a Content-Length (chunked) is stopped as it passes the limit
            nonlocal received
            message = await request.receive()
            received += len(message.get("body", b""))
            if received > limit + FORM_OVERHEAD:
                raise UploadTooLarge
            return message

        try:
            form = await Request(request.scope, counted).form(max_files=1, max_fields=8)
        except UploadTooLarge:
            await _drain(request.receive)
            return _error(413, too_large)
        except MultiPartException as err:
            return _error(400, f"not a readable multipart form: {err.message}")
        except ClientDisconnect:
            return _error(400, "the upload was interrupted")
        upload = form.get("file")
        try:
            if not isinstance(upload, UploadFile):
                return _error(422, "no file: send the image as a multipart/form-data field named 'file' "
                                   "(curl -F file=@face.jpg …)")
            try:
                formats = _formats(request, form)
            except ValueError as err:
                return _error(422, str(err))
            data = await upload.read()
            name = Path(upload.filename or "upload").name or "upload"
        finally:
            await form.close()
        if len(data) > limit:
            return _error(413, too_large)
        if not data:
            return _error(422, f"{name}: empty file")
        suffix = Path(name).suffix.lower()
        if suffix in VIDEO_SUFFIXES:
            if not service.videos:
                return _error(415, f"{name}: videos are not supported by this version; send {accepted}")
            status, body = await _run_watched(request, service.predict_video, data, suffix, name, formats)
            return JSONResponse(body, status_code=status)
        if suffix not in IMAGE_EXTENSIONS:
            suffix = _sniff_image(data)
            if suffix is None:
                return _error(415, f"{name}: not an image this server reads; send {accepted}")
        status, body = await _run_watched(request, service.predict_image, data, suffix, name, formats)
        return JSONResponse(body, status_code=status)

    async def page(request: Request) -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def example(request: Request) -> FileResponse:
        from importlib.resources import files

        return FileResponse(str(files("aullava").joinpath("resources", "examples", "astronaut.png")),
                            media_type="image/png")

    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"{type(exc).__name__}: {' '.join(str(exc).split())}")

    routes = [Route("/", page), Route("/health", health), Route("/predict", predict, methods=["POST"]),
              Route("/example.png", example), Mount("/static", StaticFiles(directory=STATIC), name="static")]
    return Starlette(routes=routes, exception_handlers={Exception: server_error})
