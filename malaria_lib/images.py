"""Reading cell images the same way everywhere: any size, any PNG mode, always 8-bit RGB.

What we do not trust in an image file we did not make: its header (it can declare a size whose pixels
would not fit in memory: a "decompression bomb"), its data (truncated or damaged), its kind (any
file can be named .png). Each is refused with a reason (`NotAnImage`) before anything large is
allocated; callers skip or report the file and go on with the others.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_SIDE = 4096  # NIH's cells are 40 to 400 pixels a side; a side beyond this is no cell image


class NotAnImage(ValueError):
    """Raised with a short reason when bytes do not decode to an image."""


def decode_rgb(data: bytes) -> tuple[Image.Image, bool]:
    """Decode image bytes to an 8-bit RGB image; also say whether a conversion was needed.

    Grayscale, palette, RGBA and 16-bit PNGs are converted rather than rejected, because a
    cell photographed or saved differently is still a cell.
    """
    if not data:
        raise NotAnImage("the file is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
        if max(image.size) > MAX_SIDE:
            raise NotAnImage(f"its header declares {image.size[0]:,} x {image.size[1]:,} pixels, far beyond a cell "
                             f"image (at most {MAX_SIDE:,} a side)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
    except NotAnImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise NotAnImage(f"too many pixels for a cell image ({exc})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        reason = "not an image" if isinstance(exc, UnidentifiedImageError) else f"damaged image data ({exc})"
        raise NotAnImage(reason) from None
    if image.mode == "RGB":
        return image, False
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale: scale to 8 bits instead of clipping, then replicate to three channels.
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if array.max() > 255 else 255.0
        array = np.clip(np.round(array / peak * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(array, mode="L").convert("RGB"), True
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels become black, which is this data set's background.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB"), True
    return image.convert("RGB"), True


def load_rgb_array(path: str, size: int | None = None) -> np.ndarray:
    """An image file as a uint8 (H, W, 3) array, optionally resized to size x size (bilinear)."""
    with open(path, "rb") as handle:
        image, _ = decode_rgb(handle.read())
    if size is not None:
        image = image.resize((size, size), Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8)
