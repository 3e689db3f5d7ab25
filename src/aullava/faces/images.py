"""Robust image loading: any file a user points us at becomes an H×W×3 uint8 RGB array, or one clear `InputError`.

Users hand the CLI whole folders of photos from phones, scanners and datasets, so every decoding problem (missing
file, text file renamed .jpg, truncated download, CMYK scan, 16-bit PNG, sideways phone photo, 60 MP panorama) has
to end either in a correct RGB array or in a one-line error that names the file, never in a traceback or a silently
half-grey image.

Transparency policy: images with alpha are composited onto white. The RGB stored under fully transparent pixels is
undefined (often black, sometimes leftover garbage), so dropping alpha would show arbitrary colours; white is what
most viewers and document pipelines show and gives a clean, defined background for face detection.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_SIDE = 2048
"""Default long-side limit: the face detector works at <= 256 px per face, so more pixels only cost memory."""

MAX_PIXELS = 100_000_000
"""Largest image (width × height) we agree to decode: 100 MP covers any camera; beyond that it is likely a
decompression bomb or a scan that would need gigabytes of RAM."""

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".gif", ".tif", ".tiff", ".webp",
     ".ppm", ".pgm", ".pbm", ".pnm", ".avif"}
)
"""Extensions picked up when a folder is expanded (compared case-insensitively)."""

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".mts", ".m2ts",
     ".3gp", ".ogv", ".mxf"}
)
"""Video files a folder expands to for `predict` (`iter_media_paths`); a video named explicitly is read whatever
its extension (`aullava.faces.video_frames` decides from the contents)."""

# PIL warns above MAX_IMAGE_PIXELS and refuses above twice that; we do our own, clearer check against MAX_PIXELS,
# so only ever *raise* PIL's limit (never lower a limit someone else configured) to keep 90-100 MP images quiet.
if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < MAX_PIXELS:
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
# Truncated files must raise, not decode as grey: we never set ImageFile.LOAD_TRUNCATED_IMAGES (default False).


class InputError(ValueError):
    """A file that cannot be used as an input image. `str(err)` is one line: ``"<path>: <reason>"``."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = " ".join(str(reason).split())  # one line, whatever the underlying library said
        super().__init__(f"{self.path}: {self.reason}")

    def __reduce__(self):  # picklable across DataLoader / multiprocessing workers despite the 2-arg constructor
        return (type(self), (self.path, self.reason))


def require_readable_file(path: Path, kind: str) -> None:
    """The checks a decoder's own error would blur (it only says it cannot open the file), each an InputError:
    missing, a directory, unreadable. `kind` names what was expected ("video")."""
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir():
        raise InputError(path, f"is a directory, not a {kind} file")
    if not os.access(path, os.R_OK):
        raise InputError(path, "cannot read file (permission denied)")


def _reason(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


def _open(path: Path) -> Image.Image:
    """Open lazily (header only) and translate every failure into an InputError."""
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir():
        raise InputError(path, "is a directory, not an image file")
    if not path.is_file():  # opening a FIFO would block forever, a device could read without end
        kind = next((name for test, name in ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a device"),
                                             (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"))
                     if test(path.stat().st_mode)), "not a regular file")
        raise InputError(path, f"{kind}, not an image file: skipped")
    try:
        with warnings.catch_warnings():  # 90-200 MP: PIL warns; our own MAX_PIXELS check decides instead
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except UnidentifiedImageError:
        raise InputError(path, "not an image (cannot identify image file)") from None
    except Image.DecompressionBombError as err:
        raise InputError(path, f"image too large ({_reason(err)})") from None
    except PermissionError:
        raise InputError(path, "cannot read file (permission denied)") from None
    except Exception as err:  # noqa: BLE001 - malformed headers raise all sorts (SyntaxError, struct.error, ...)
        raise InputError(path, f"cannot read image ({_reason(err)})") from None


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode → 8-bit RGB with the right content (PIL's own convert() clips 16-bit data to white)."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(im)
        if mode == "F" and np.nanmax(a, initial=0.0) <= 1.0:
            a = a * 255.0  # float images are conventionally 0..1
        elif mode != "F":
            a = a.astype(np.float64) / 257.0  # 16-bit range 0..65535 → 0..255 (I is how PIL loads 16-bit files too)
        a = np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8)
        return Image.fromarray(np.repeat(a[..., None], 3, axis=2), "RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in im.info)
    has_alpha = has_alpha or (mode in ("L", "RGB") and "transparency" in im.info)
    if has_alpha:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")  # L, 1, P, CMYK, YCbCr, ...


def load_image(path: str | os.PathLike, max_side: int | None = MAX_SIDE) -> np.ndarray:
    """Decode `path` into an H×W×3 uint8 RGB array, upright (EXIF orientation applied), long side <= `max_side`.

    `max_side=None` keeps full resolution. JPEGs are decoded at a reduced DCT scale (`Image.draft`) when that still
    gives at least `max_side`, so a 8000×8000 photo never needs its full 192 MB in memory.
    Raises `InputError` (naming the file) for anything that is not a decodable image.
    """
    return load_image_and_size(path, max_side)[0]


def load_image_and_size(path: str | os.PathLike, max_side: int | None = MAX_SIDE) -> tuple[np.ndarray, tuple[int, int]]:
    """`load_image`, and the upright picture's own (width, height) in pixels: what coordinates of a reduced
    array are scaled back to (a phone photo's 4032×3024, say, when the array is 2048×1536)."""
    path = Path(path)
    im = _open(path)
    with im:
        w, h = im.size
        if w <= 0 or h <= 0:
            raise InputError(path, f"empty image ({w}×{h})")
        if w * h > MAX_PIXELS:
            limit = f"{MAX_PIXELS / 1e6:.0f} MP limit"
            raise InputError(path, f"image too large ({w}×{h} = {w * h / 1e6:.0f} MP > {limit})")
        if max_side is not None and max(w, h) > max_side and im.format == "JPEG":
            scale = max_side / max(w, h)
            im.draft(im.mode, (max(1, int(w * scale + 0.999)), max(1, int(h * scale + 0.999))))
        try:
            im.load()  # decode now, inside try: truncated / corrupt data raises here
        except Image.DecompressionBombError as err:
            raise InputError(path, f"image too large ({_reason(err)})") from None
        except MemoryError:
            raise InputError(path, "image too large to decode (out of memory)") from None
        except OSError as err:
            if "truncated" in str(err).lower():
                raise InputError(path, f"corrupt or truncated image ({_reason(err)})") from None
            raise InputError(path, f"cannot decode image ({_reason(err)})") from None
        except Exception as err:  # noqa: BLE001 - decoders raise ValueError, SyntaxError, EOFError, IndexError, ...
            raise InputError(path, f"cannot decode image ({_reason(err)})") from None
        try:
            turned = im.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # EXIF orientations that swap width and height
        except Exception:  # noqa: BLE001 - malformed EXIF: as stored
            turned = False
        picture_size = (h, w) if turned else (w, h)
        try:
            ImageOps.exif_transpose(im, in_place=True)  # in place: no 200 MB copy for upright photos
        except Exception:  # noqa: BLE001 - malformed EXIF: orientation unknown, keep pixels as stored
            pass
        try:
            rgb = _to_rgb(im)
        except Exception as err:  # noqa: BLE001 - e.g. LAB/HSV modes PIL cannot convert
            raise InputError(path, f"unsupported colour mode {im.mode!r} ({_reason(err)})") from None
        if max_side is not None and max(rgb.size) > max_side:
            scale = max_side / max(rgb.size)
            size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
            rgb = rgb.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
        if (rgb.width >= rgb.height) != (picture_size[0] >= picture_size[1]):  # an orientation PIL did not apply
            picture_size = picture_size[::-1]
        return np.array(rgb, dtype=np.uint8), picture_size  # a fresh, writable, C-contiguous copy


def _is_hidden(name: str) -> bool:
    # Skips .git, .ipynb_checkpoints and macOS AppleDouble "._photo.jpg" files (not images despite the extension).
    return name.startswith(".")


def is_video_path(path: str | os.PathLike) -> bool:
    """Whether `predict` treats this file as a video: by extension (a video with another name is sniffed by the
    caller; an image is never decoded as a video)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _walk_images(folder: Path, extensions=IMAGE_EXTENSIONS) -> list[Path]:
    found: list[Path] = []
    seen_dirs: set[str] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen_dirs:  # symlink loop
            dirs[:] = []
            continue
        seen_dirs.add(real)
        dirs[:] = [d for d in dirs if not _is_hidden(d)]
        for name in files:
            if not _is_hidden(name) and os.path.splitext(name)[1].lower() in extensions:
                found.append(Path(root) / name)
    return sorted(found)


def iter_image_paths(inputs: list[str | os.PathLike], videos: bool = False) -> list[Path]:
    """Expand the user's inputs into the list of files to process, in a deterministic order.

    Folders expand recursively to their image files (sorted; extension matched case-insensitively; hidden files and
    folders skipped). Anything else named explicitly is kept as given, even a missing path or an odd extension, so
    that it gets its own `InputError` from `load_image` instead of silently vanishing. Duplicates are dropped.
    `videos`: folders also expand to their video files (`VIDEO_EXTENSIONS`), as `predict` reads them.
    """
    result: list[Path] = []
    seen: set[str] = set()
    extensions = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS if videos else IMAGE_EXTENSIONS
    for item in inputs:
        path = Path(item)
        for p in _walk_images(path, extensions) if path.is_dir() else [path]:
            key = os.path.realpath(p)
            if key not in seen:
                seen.add(key)
                result.append(p)
    return result
