"""image.thumbnail's pure part: one image file in, cozy-stack's four sizes out, encoded."""

from __future__ import annotations

import errno
import io
import math
from dataclasses import dataclass
from typing import BinaryIO

from PIL import Image, ImageOps, UnidentifiedImageError

try:  # HEIC and HEIF photos (phones): the optional extra ``heif`` (pillow-heif).
    from pillow_heif import register_heif_opener
except ImportError:  # pragma: no cover - without the extra, such files are "not an image"
    HEIF = False
else:
    register_heif_opener()
    HEIF = True

# name, width, height, cropped to exactly that square (else fit inside, never upscaled);
# largest first: each is resized from the smallest already made that is big enough.
SIZES = (
    ("large", 1920, 1080, False),
    ("medium", 1280, 720, False),
    ("small", 640, 480, False),
    ("tiny", 96, 96, True),
)
JPEG_QUALITY = 85
# Pillow warns past MAX_IMAGE_PIXELS and refuses past twice that; ours refuses past the limit.
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
_ROTATED = (5, 6, 7, 8)  # EXIF orientations that swap width and height
_SIXTEEN = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class Unusable(Exception):
    """The file is no image this worker can make thumbnails of; the reason says why."""

    def __init__(self, reason: str, code: int = errno.EINVAL) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


@dataclass(frozen=True)
class Thumb:
    size: str
    data: bytes
    extension: str  # "jpg", or "png" where transparency is kept


def _fit(width: int, height: int, box_w: int, box_h: int) -> tuple[int, int]:
    scale = min(box_w / width, box_h / height, 1.0)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _cover(width: int, height: int, side: int) -> tuple[int, int]:
    """The size that covers a ``side`` square, before the crop."""
    scale = side / min(width, height)
    return max(side, math.ceil(width * scale)), max(side, math.ceil(height * scale))


def _draft(im: Image.Image) -> None:
    """Let the JPEG decoder scale down by 1/2, 1/4 or 1/8 while keeping at least what the
    largest size needs (in the file's own orientation)."""
    if im.format != "JPEG":
        return
    orientation = im.getexif().get(0x0112, 1)
    w, h = im.size
    if orientation in _ROTATED:
        w, h = h, w
    need_w, need_h = _fit(w, h, SIZES[0][1], SIZES[0][2])
    tiny = SIZES[-1][1]
    need_w, need_h = max(need_w, min(w, tiny)), max(need_h, min(h, tiny))
    if orientation in _ROTATED:
        need_w, need_h = need_h, need_w
    im.draft(None, (need_w, need_h))


def _normalise(im: Image.Image, keep_alpha: bool) -> tuple[Image.Image, bool]:
    """An RGB (or RGBA, when keeping transparency) image; whether it has alpha."""
    if im.mode in _SIXTEEN:
        # Scaled to 8 bits (a plain convert clips everything past 255 to white).
        im = im.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    alpha = im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info
    if alpha:
        rgba = im.convert("RGBA")
        if keep_alpha:
            return rgba, True
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat, False
    return (im if im.mode == "RGB" else im.convert("RGB")), False


def _encode(im: Image.Image, alpha: bool) -> tuple[bytes, str]:
    out = io.BytesIO()
    if alpha:
        im.save(out, "PNG", optimize=False)
        return out.getvalue(), "png"
    im.save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue(), "jpg"


def _decode(f: BinaryIO, max_pixels: int) -> Image.Image:
    # Between MAX_IMAGE_PIXELS and twice that, Pillow only warns: max_pixels refuses those.
    try:
        im = Image.open(f)
    except UnidentifiedImageError:
        raise Unusable("Not an image (no format Pillow reads)") from None
    except Image.DecompressionBombError as e:
        raise Unusable(f"Decompression bomb: {e}", errno.EFBIG) from None
    width, height = im.size
    if width * height > max_pixels:
        im.close()
        raise Unusable(
            f"Image of {width}x{height} pixels is over the limit of {max_pixels} pixels",
            errno.EFBIG,
        )
    try:
        im.seek(0)  # an animation's first frame
        _draft(im)
        im.load()
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        im.close()
        raise Unusable(f"Cannot decode the image: {e}") from None
    return im


def render(
    f: BinaryIO, keep_alpha: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS
) -> list[Thumb]:
    """The four sizes of the image in ``f``, EXIF orientation applied, no metadata kept.
    Raises ``Unusable`` for what is not a readable image, or one too large."""
    with _decode(f, max_pixels) as decoded:
        try:
            oriented = ImageOps.exif_transpose(decoded)
        except (OSError, ValueError, SyntaxError) as e:
            raise Unusable(f"Cannot read the image's orientation: {e}") from None
        try:
            base, alpha = _normalise(oriented, keep_alpha)
        except (OSError, ValueError) as e:
            raise Unusable(f"Cannot convert the image's {oriented.mode} pixels: {e}") from None
    made: list[Image.Image] = [base]
    thumbs: list[Thumb] = []
    for name, box_w, box_h, crop in SIZES:
        w, h = base.size
        want = _cover(w, h, box_w) if crop else _fit(w, h, box_w, box_h)
        # The smallest image made so far that still holds that many pixels each way.
        source = min(
            (m for m in made if m.width >= want[0] and m.height >= want[1]),
            key=lambda m: m.width * m.height,
            default=base,
        )
        if crop:
            image = ImageOps.fit(source, (box_w, box_h), Image.Resampling.LANCZOS)
        elif source.size == want:
            image = source
        else:
            image = source.resize(want, Image.Resampling.LANCZOS, reducing_gap=3.0)
        made.append(image)
        data, extension = _encode(image, alpha)
        thumbs.append(Thumb(name, data, extension))
    return thumbs
