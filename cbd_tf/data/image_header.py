"""What an encoded image will cost to decode, read from its bytes in TF ops before decoding:
the checks a server and a training run make on files they did not make (a 4.7 MB JPEG can
declare 20,000 x 20,000 pixels: 1.2 GB decoded; a 13 MB GIF can hold 1,500 frames of 9 MP,
and TensorFlow's GIF decoder decodes every frame even when only the first is kept).

Declared size, per format:
  JPEG   tf.io.extract_jpeg_shape (the SOF marker)
  PNG    IHDR: width, height as big-endian uint32 at bytes 16 and 20 (APNG frames are
         ancillary chunks: libpng decodes the default image only)
  GIF    the first image descriptor's width and height (what giflib allocates for a frame;
         the logical screen size is not a bound), found by walking the blocks (below)
  BMP    BITMAPINFOHEADER: width, height as little-endian int32 at bytes 18 and 22
         (a negative height is a top-down bitmap)
  WebP   VP8X: canvas width - 1, height - 1 as 24-bit little-endian at bytes 24 and 27;
         VP8L: 14-bit width - 1 and height - 1 packed from byte 21; VP8: 14-bit width and
         height at bytes 26 and 28

`checked` is what every decode of a user's file goes through (augment.decode_image): it
refuses, with one line naming the reason, a file of another format (tf.io.decode_image
also decodes JPEG XL, whose size is not read here), an image declaring more pixels than
the limit, an animated WebP (TensorFlow's decoder refuses it: it decodes animations as
RGBA only) and a GIF without a complete first image; and it cuts a GIF after its first
image, so that one frame is decoded, whatever the file holds after it.
"""

from __future__ import annotations

import tensorflow as tf

_HEADER_BYTES = 32
FORMATS = "JPEG, PNG, GIF, BMP or WebP"


def _header(contents: tf.Tensor) -> tf.Tensor:
  """The first 32 bytes as int64 (zeros past the end of a shorter input)."""
  padded = tf.strings.join([tf.strings.substr(contents, 0, _HEADER_BYTES),
                            tf.constant(b"\0" * _HEADER_BYTES)])
  return tf.cast(tf.io.decode_raw(tf.strings.substr(padded, 0, _HEADER_BYTES), tf.uint8),
                 tf.int64)


def _little(header, start, length: int):
  return sum(header[start + i] * 256 ** i for i in range(length))


def _big(header, start: int, length: int):
  return sum(header[start + i] * 256 ** (length - 1 - i) for i in range(length))


def _matches(header, start: int, magic: bytes):
  return tf.reduce_all(tf.equal(header[start:start + len(magic)],
                                tf.constant(list(magic), tf.int64)))


def _signed32(value):
  return tf.where(value >= 2 ** 31, value - 2 ** 32, value)


def _is_webp(header):
  return tf.logical_and(_matches(header, 0, b"RIFF"), _matches(header, 8, b"WEBP"))


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


def _is_animated_webp(header):
  # VP8X flags byte: bit 1 is the animation flag.
  return tf.logical_and(_matches(header, 12, b"VP8X"), header[20] // 2 % 2 == 1)


def _last_successor(successor: tf.Tensor, start: tf.Tensor | None = None) -> tf.Tensor:
  """successor[p] iterated to its fixed point, for every p (or, given `start`, until
  start's is one). Pointer jumping: each round one gather squares the map, so a path of
  n steps takes log2(n) rounds of O(N), never n sequential graph steps (a GIF of 1-byte
  sub-blocks is ~N / 2 steps long)."""

  def unfinished(current, squared):
    if start is None:
      return tf.reduce_any(tf.not_equal(squared, current))
    return tf.not_equal(squared[start], current[start])

  def square(_, squared):
    return squared, tf.gather(squared, squared)

  return tf.while_loop(unfinished, square, [successor, tf.gather(successor, successor)])[0]


def _gif_first_image(contents: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """(end, [height, width]) of a GIF's first image: `end` the offset of the zero byte that
  closes its data (-1 when the file holds no complete image), the size its descriptor
  declares. Walks the first MB alone first: a first image that ends there needs no walk of
  the frames after it."""
  prefix = _gif_walk(tf.strings.substr(contents, 0, _GIF_PREFIX_BYTES))
  return tf.cond(
      tf.logical_or(prefix[0] >= 0, tf.strings.length(contents) <= _GIF_PREFIX_BYTES),
      lambda: prefix, lambda: _gif_walk(contents))


_GIF_PREFIX_BYTES = 2 ** 20


def _gif_walk(contents: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """_gif_first_image over all of `contents`.

  A GIF is a header, a logical screen descriptor and an optional global colour table,
  then blocks: an extension (0x21, a label, sub-blocks) or an image (0x2C, 9 more
  descriptor bytes, an optional local colour table, the LZW code size, sub-blocks); a
  sub-block is a length byte and that many bytes, and a zero length ends the chain."""
  data = tf.cast(tf.io.decode_raw(contents, tf.uint8), tf.int32)
  end_of_file = tf.size(data)  # also the "fell off the end" position: its own successor
  positions = tf.range(end_of_file + 1)
  data = tf.concat([data, [0]], 0)

  def at(offsets):
    return tf.gather(data, tf.minimum(offsets, end_of_file))

  def colour_table_bytes(flags):
    return tf.where(flags >= 128, 3 * 2 ** (flags % 8 + 1), 0)

  chain_end = _last_successor(tf.where(
      tf.logical_or(data == 0, positions == end_of_file), positions,
      tf.minimum(positions + 1 + data, end_of_file)))
  after_extension = tf.gather(chain_end, tf.minimum(positions + 2, end_of_file)) + 1
  next_block = tf.where(data == 0x2C, positions,
                        tf.where(data == 0x21, tf.minimum(after_extension, end_of_file),
                                 end_of_file))
  next_block = tf.where(positions == end_of_file, end_of_file, next_block)
  first_block = tf.minimum(13 + colour_table_bytes(at(10)), end_of_file)
  image = _last_successor(next_block, first_block)[first_block]
  image_data = image + 11 + colour_table_bytes(at(image + 9))
  end = tf.gather(chain_end, tf.minimum(image_data, end_of_file))
  complete = tf.logical_and(image < end_of_file, end < end_of_file)
  size = tf.stack([at(image + 7) + 256 * at(image + 8), at(image + 5) + 256 * at(image + 6)])
  return tf.where(complete, end, -1), tf.cast(tf.where(complete, size, 0), tf.int64)


def declared_size(contents: tf.Tensor) -> tf.Tensor:
  """int64 [height, width] the scalar string `contents` declares (module docstring); (0, 0)
  for anything else, or a GIF without a complete first image."""
  header = _header(contents)
  return tf.case([
      (_matches(header, 0, b"\xff\xd8"),
       lambda: tf.cast(tf.io.extract_jpeg_shape(contents)[:2], tf.int64)),
      (_matches(header, 0, b"\x89PNG"),
       lambda: tf.stack([_big(header, 20, 4), _big(header, 16, 4)])),
      (_matches(header, 0, b"GIF8"), lambda: _gif_first_image(contents)[1]),
      (_matches(header, 0, b"BM"),
       lambda: tf.stack([tf.abs(_signed32(_little(header, 22, 4))),
                         tf.abs(_signed32(_little(header, 18, 4)))])),
      (_is_webp(header), lambda: _webp_size(header)),
  ], default=lambda: tf.zeros([2], tf.int64))


def _refuse_unless(condition, message: tf.Tensor) -> tf.Operation:
  return tf.debugging.Assert(condition, [message])


def check_pixels(height: tf.Tensor, width: tf.Tensor, max_pixels) -> tf.Operation:
  """Raises InvalidArgument (one line) when height x width is over `max_pixels`."""
  height, width = tf.cast(height, tf.int64), tf.cast(width, tf.int64)
  max_pixels = tf.cast(max_pixels, tf.int64)
  return _refuse_unless(height * width <= max_pixels, tf.strings.format(
      "image of {} x {} pixels is over the limit of {} pixels (--max_image_pixels)",
      (height, width, max_pixels)))


def checked(contents: tf.Tensor, max_pixels) -> tf.Tensor:
  """`contents` ready for tf.io.decode_image (a GIF cut after its first image), or
  InvalidArgument with one line naming the reason (module docstring)."""
  header = _header(contents)
  is_gif = _matches(header, 0, b"GIF8")
  known = tf.reduce_any(tf.stack([
      _matches(header, 0, b"\xff\xd8"), _matches(header, 0, b"\x89PNG"), is_gif,
      _matches(header, 0, b"BM"), _is_webp(header)]))
  # Whole GIFs cost more than their first image to walk (not to decode): walk once.
  gif_end, gif_size = tf.cond(
      is_gif, lambda: _gif_first_image(contents),
      lambda: (tf.constant(-1), tf.zeros([2], tf.int64)))
  checks = [_refuse_unless(known, tf.constant(f"not a {FORMATS} image"))]
  with tf.control_dependencies(checks):
    size = tf.cond(is_gif, lambda: gif_size, lambda: declared_size(contents))
  checks = [
      check_pixels(size[0], size[1], max_pixels),
      _refuse_unless(tf.logical_not(_is_animated_webp(header)),
                     tf.constant("animated WebP: only still WebP images are decoded")),
      _refuse_unless(tf.logical_or(tf.logical_not(is_gif), gif_end >= 0),
                     tf.constant("GIF without a complete first image")),
  ]
  with tf.control_dependencies(checks):
    return tf.cond(
        is_gif,
        lambda: tf.strings.join([tf.strings.substr(contents, 0, gif_end + 1), b";"]),
        lambda: tf.identity(contents))
