"""The pixel size an encoded image declares, read from its header in TF ops, without decoding:
what a server checks before it decodes bytes it did not make (a 4.7 MB JPEG can declare
20,000 x 20,000 pixels: 1.2 GB decoded).

  JPEG   tf.io.extract_jpeg_shape (the SOF marker)
  PNG    IHDR: width, height as big-endian uint32 at bytes 16 and 20
  GIF    logical screen: width, height as little-endian uint16 at bytes 6 and 8
  BMP    BITMAPINFOHEADER: width, height as little-endian int32 at bytes 18 and 22
         (a negative height is a top-down bitmap)
  WebP   VP8X: canvas width - 1, height - 1 as 24-bit little-endian at bytes 24 and 27;
         VP8L: 14-bit width - 1 and height - 1 packed from byte 21; VP8: 14-bit width and
         height at bytes 26 and 28
Anything else declares (0, 0): the decoder then rejects it with its own error.
"""

from __future__ import annotations

import tensorflow as tf

_HEADER_BYTES = 32


def _header(contents: tf.Tensor) -> tf.Tensor:
  """The first 32 bytes as int64 (zeros past the end of a shorter input)."""
  padded = tf.strings.join([tf.strings.substr(contents, 0, _HEADER_BYTES),
                            tf.constant(b"\0" * _HEADER_BYTES)])
  return tf.cast(tf.io.decode_raw(tf.strings.substr(padded, 0, _HEADER_BYTES), tf.uint8),
                 tf.int64)


def _little(header, start: int, length: int):
  return sum(header[start + i] * 256 ** i for i in range(length))


def _big(header, start: int, length: int):
  return sum(header[start + i] * 256 ** (length - 1 - i) for i in range(length))


def _matches(header, start: int, magic: bytes):
  return tf.reduce_all(tf.equal(header[start:start + len(magic)],
                                tf.constant(list(magic), tf.int64)))


def _signed32(value):
  return tf.where(value >= 2 ** 31, value - 2 ** 32, value)


def _webp_size(header):
  vp8l_bits = _little(header, 21, 4)
  return tf.case([
      (_matches(header, 12, b"VP8X"),
       lambda: tf.stack([1 + _little(header, 27, 3), 1 + _little(header, 24, 3)])),
      (_matches(header, 12, b"VP8L"),
       lambda: tf.stack([1 + (vp8l_bits // 2 ** 14) % 2 ** 14, 1 + vp8l_bits % 2 ** 14])),
      (_matches(header, 12, b"VP8 "),
       lambda: tf.stack([_little(header, 28, 2) % 2 ** 14, _little(header, 26, 2) % 2 ** 14])),
  ], default=lambda: tf.zeros([2], tf.int64))


def declared_size(contents: tf.Tensor) -> tf.Tensor:
  """int64 [height, width] the scalar string `contents` declares (module docstring)."""
  header = _header(contents)
  return tf.case([
      (_matches(header, 0, b"\xff\xd8"),
       lambda: tf.cast(tf.io.extract_jpeg_shape(contents)[:2], tf.int64)),
      (_matches(header, 0, b"\x89PNG"),
       lambda: tf.stack([_big(header, 20, 4), _big(header, 16, 4)])),
      (_matches(header, 0, b"GIF8"),
       lambda: tf.stack([_little(header, 8, 2), _little(header, 6, 2)])),
      (_matches(header, 0, b"BM"),
       lambda: tf.stack([tf.abs(_signed32(_little(header, 22, 4))),
                         tf.abs(_signed32(_little(header, 18, 4)))])),
      (tf.logical_and(_matches(header, 0, b"RIFF"), _matches(header, 8, b"WEBP")),
       lambda: _webp_size(header)),
  ], default=lambda: tf.zeros([2], tf.int64))
