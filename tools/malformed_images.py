"""A corpus of malformed and awkward images, generated (no binary files checked in), to try a
decoder or a server with:

  python tools/malformed_images.py OUT_DIR    # one file per case, named CASE.bin

For
each format, files truncated at several points, the right magic followed by random bytes,
headers declaring 0, 1 x 100,000 and 2^31 - 1 pixels a side and width x height past 64 bits
of bytes, CMYK and progressive JPEG, 16-bit, grey + alpha and palette PNG, animated GIF,
WebP and PNG, 1 x 1 images. `corpus()` maps a name to (bytes, what a decoder must do:
"decode", "refuse" or "either": a truncated image may still decode, in part). Pillow makes
the still images."""

from __future__ import annotations

import argparse
import io
import os
import struct
import zlib

import numpy as np
from PIL import Image

FORMATS = ("jpeg", "png", "gif", "bmp", "webp")


def encode(image: Image.Image, fmt: str, **options) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, fmt, **options)
  return buffer.getvalue()


def _noise(size=(24, 32), seed=0) -> Image.Image:
  rgb = np.random.default_rng(seed).integers(0, 256, size=(*size, 3), dtype=np.uint8)
  return Image.fromarray(rgb)


def gif_blocks(gif: bytes) -> tuple[bytes, list[bytes]]:
  """(header with its colour table, [each block up to the trailer]) of a GIF."""
  flags = gif[10]
  position = 13 + (3 * 2 ** (flags % 8 + 1) if flags & 0x80 else 0)
  head, blocks = gif[:position], []
  while gif[position] != 0x3B:
    start = position
    if gif[position] == 0x21:
      position += 2
    else:
      local = gif[position + 9]
      position += 10 + (3 * 2 ** (local % 8 + 1) if local & 0x80 else 0) + 1
    while gif[position]:
      position += 1 + gif[position]
    position += 1
    blocks.append(gif[start:position])
  return head, blocks


def animated_gif(side: int, frames: int, colour=(200, 30, 60)) -> bytes:
  """`frames` solid frames of side x side pixels: each LZW-compressed to a few kB, as the
  bomb in issue 30 (600 frames of 3,000 x 3,000 in 5.2 MB)."""
  head, blocks = gif_blocks(encode(Image.new("RGB", (side, side), colour), "GIF"))
  image = [block for block in blocks if block[0] == 0x2C][0]
  control = b"\x21\xf9\x04\x00\x01\x00\x00\x00"  # graphic control: no disposal, 10 ms
  return head + (control + image) * frames + b";"


def gif_with_frame_size(width: int, height: int) -> bytes:
  """A 1 x 1 GIF whose (logical screen and) first image descriptor declare width x height."""
  head, blocks = gif_blocks(encode(Image.new("P", (1, 1)), "GIF"))
  head = head[:6] + struct.pack("<HH", width, height) + head[10:]
  blocks = [block[:5] + struct.pack("<HH", width, height) + block[9:] if block[0] == 0x2C
            else block for block in blocks]
  return head + b"".join(blocks) + b";"


def gif_many_extensions(count: int) -> bytes:
  """A 1 x 1 GIF with `count` comment extensions of 1-byte sub-blocks before its image."""
  head, blocks = gif_blocks(encode(Image.new("P", (1, 1)), "GIF"))
  return head + (b"\x21\xfe" + b"\x01x" * 8 + b"\x00") * count + b"".join(blocks) + b";"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
  return (struct.pack(">I", len(data)) + kind + data
          + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png_declaring(width: int, height: int) -> bytes:
  """A PNG whose IHDR declares width x height, with one scanline of data."""
  ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
  return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
          + _png_chunk(b"IDAT", zlib.compress(b"\0" + b"\0" * 3 * min(width, 64)))
          + _png_chunk(b"IEND", b""))


def jpeg_declaring(width: int, height: int) -> bytes:
  jpeg = encode(_noise((16, 16)), "JPEG")
  sof = jpeg.index(b"\xff\xc0")
  return jpeg[:sof + 5] + struct.pack(">HH", height, width) + jpeg[sof + 9:]


def bmp_declaring(width: int, height: int) -> bytes:
  bmp = encode(_noise((2, 2)), "BMP")
  return bmp[:18] + struct.pack("<ii", width, height) + bmp[26:]


def webp_declaring(width: int, height: int) -> bytes:
  """An extended (VP8X) WebP whose canvas declares width x height (24 bits a side), or a
  simple lossy one (14 bits a side) where a side is 0, which VP8X cannot declare."""
  if not width or not height:
    webp = encode(_noise((16, 16)), "WEBP", quality=80)
    assert webp[12:16] == b"VP8 "
    return webp[:26] + struct.pack("<HH", width, height) + webp[30:]
  webp = encode(_noise((16, 16)), "WEBP", quality=80, exif=b"Exif\0\0cbd")
  assert webp[12:16] == b"VP8X"
  return (webp[:24] + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
          + webp[30:])


def gif_declaring(width: int, height: int) -> bytes:
  return gif_with_frame_size(width, height)


DECLARING = {"jpeg": (jpeg_declaring, 65_535), "png": (png_declaring, 2 ** 31 - 1),
             "gif": (gif_declaring, 65_535), "bmp": (bmp_declaring, 2 ** 31 - 1),
             "webp": (webp_declaring, 2 ** 24)}


def still(fmt: str, size=(24, 32)) -> bytes:
  options = {"webp": {"quality": 80}}.get(fmt, {})
  return encode(_noise(size), fmt.upper(), **options)


def corpus() -> dict[str, tuple[bytes, str]]:
  """{name: (bytes, "decode" | "refuse")} (module docstring)."""
  rng = np.random.default_rng(30)
  cases = {}
  for fmt in FORMATS:
    good = still(fmt)
    cases[f"{fmt}_1x1"] = (still(fmt, (1, 1)), "decode")
    for fraction in (0.1, 0.5, 0.9):
      cases[f"{fmt}_truncated_{int(fraction * 100)}%"] = (good[:int(len(good) * fraction)],
                                                          "either")
    cases[f"{fmt}_magic_then_random"] = (good[:4] + rng.bytes(2_000), "refuse")
    declare, largest = DECLARING[fmt]
    # 1 x 100,000: 1 x 65,535 where the header holds 16 bits a side (JPEG, GIF).
    for name, (width, height) in {"0_wide": (0, 16), "1xtall": (1, min(100_000, largest)),
                                  "largest": (largest, largest)}.items():
      cases[f"{fmt}_declares_{name}"] = (declare(width, height),
                                         "refuse" if width * height > 89_478_485 or
                                         width == 0 else "either")
  cases["bmp_declares_overflowing_product"] = (bmp_declaring(2 ** 31 - 1, -(2 ** 31)),
                                               "refuse")
  cases["png_declares_overflowing_product"] = (png_declaring(2 ** 31 - 1, 2 ** 31 - 1),
                                               "refuse")
  cases["jpeg_cmyk"] = (encode(Image.new("CMYK", (9, 7), (10, 200, 30, 5)), "JPEG"), "decode")
  cases["jpeg_progressive"] = (encode(_noise(), "JPEG", progressive=True), "decode")
  cases["jpeg_grey"] = (encode(_noise().convert("L"), "JPEG"), "decode")
  cases["png_16bit"] = (encode(Image.fromarray(
      np.arange(24 * 32, dtype=np.uint16).reshape(24, 32) * 80), "PNG"), "decode")
  cases["png_grey_alpha"] = (encode(_noise().convert("LA"), "PNG"), "decode")
  cases["png_palette"] = (encode(_noise().convert("P"), "PNG"), "decode")
  cases["png_animated"] = (encode(_noise(), "PNG", save_all=True,
                                  append_images=[_noise(seed=1)] * 30), "decode")
  cases["gif_animated_1000_frames"] = (animated_gif(1_000, 1_000), "decode")
  cases["gif_many_extensions"] = (gif_many_extensions(60_000), "decode")  # 1.1 MB
  cases["webp_animated"] = (encode(_noise(), "WEBP", save_all=True,
                                   append_images=[_noise(seed=1)] * 30), "refuse")
  cases["jxl_signature"] = (b"\xff\x0a" + rng.bytes(64), "refuse")
  cases["empty"] = (b"", "refuse")
  cases["text"] = (b"not an image at all", "refuse")
  return cases


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("out_dir")
  args = parser.parse_args(argv)
  os.makedirs(args.out_dir, exist_ok=True)
  for name, (contents, expected) in corpus().items():
    with open(os.path.join(args.out_dir, f"{name}.bin"), "wb") as f:
      f.write(contents)
    print(f"{name}\t{len(contents)}\t{expected}")


if __name__ == "__main__":
  main()
