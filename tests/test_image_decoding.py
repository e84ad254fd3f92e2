"""The upload conversion rule and the input errors of ``service.areas.images`` (in-process)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from harness.images import b64, encode, load_test_images
from service.areas.images import (
    MAX_PIXELS,
    ImageInputError,
    decode,
    decode_base64,
    decode_column,
    parse_k,
    to_results,
)
from service.errors import RequestInputError

IMAGES, _ = load_test_images(200)


def test_fashion_mnist_pngs_decode_to_their_exact_pixels() -> None:
    for pixels in IMAGES:
        assert np.array_equal(decode(encode(pixels), ["image"]), pixels)


def _dark_on_light_photo(pixels: np.ndarray, scale: int = 4) -> bytes:
    """The garment dark on a white background, RGB and enlarged, as a phone photo might be."""
    large = Image.fromarray(255 - pixels).resize((28 * scale, 28 * scale), Image.Resampling.BICUBIC)
    return encode(np.asarray(large.convert("RGB")), "JPEG")


def test_dark_on_light_photos_are_inverted_to_light_on_dark() -> None:
    for pixels in IMAGES[:20]:
        decoded = decode(_dark_on_light_photo(pixels), ["image"]).astype(float)
        assert np.abs(decoded - pixels).mean() < 20  # not inverted: far above 100


def test_transparent_background_counts_as_white() -> None:
    rgba = np.zeros((56, 56, 4), dtype=np.uint8)  # fully transparent black...
    rgba[14:42, 14:42] = (30, 30, 30, 255)  # ...around an opaque dark square
    decoded = decode(encode(rgba), ["image"])
    assert decoded[0, 0] == 0 and decoded[14, 14] > 200


def test_aspect_ratio_is_kept_by_padding_with_black() -> None:
    wide = np.full((10, 40), 255, dtype=np.uint8)  # a light bar on no background at all
    decoded = decode(encode(wide), ["image"])
    assert decoded[0].max() == 0 and decoded[14].min() > 200


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"", "empty_image"),
        (b"this is plain text, not an image", "not_an_image"),
        (encode(IMAGES[0])[:60], "corrupt_image"),
        (encode(np.zeros((4001, 4000), dtype=np.uint8)), "image_too_large"),
    ],
    ids=["empty", "not an image", "truncated", "over the pixel limit"],
)
def test_bad_files_raise_errors_naming_the_field(data: bytes, kind: str) -> None:
    with pytest.raises(ImageInputError) as error:
        decode(data, ["images", 3])
    assert error.value.loc == ["images", 3] and error.value.kind == kind
    if kind == "image_too_large":
        assert str(MAX_PIXELS) in str(error.value)


def test_bad_base64_names_the_index() -> None:
    with pytest.raises(ImageInputError) as error:
        decode_base64([b64(encode(IMAGES[0])), "not base64!"])
    assert error.value.loc == ["images", 1] and error.value.kind == "bad_base64"


@pytest.mark.parametrize(
    "raw", ["0", "11", "-1", "three", "2.5", "", "²", "٣", "1 0", " 3", "9" * 5000, "0" * 5000]
)
def test_k_outside_1_to_10_is_refused(raw: str) -> None:
    with pytest.raises(RequestInputError) as error:
        parse_k(raw)
    assert error.value.loc == ["query", "k"]
    assert str(error.value) == "must be an integer from 1 to 10"


def test_k_may_have_leading_zeros() -> None:
    assert parse_k("0" * 5000 + "7") == 7 and parse_k(None) == 3


def test_top_k_is_sorted_and_sums_to_at_most_one() -> None:
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(10), size=50).astype(np.float32)
    labels = [f"class {i}" for i in range(10)]
    for k in (1, 3, 10):
        for row, result in zip(
            probabilities, to_results({"probabilities": probabilities}, labels, k), strict=True
        ):
            values = [entry["probability"] for entry in result["top_k"]]
            assert len(values) == k and values == sorted(values, reverse=True)
            assert sum(values) <= 1 + 1e-6
            assert result["class_id"] == int(row.argmax())
            assert result["label"] == labels[result["class_id"]] == result["top_k"][0]["label"]


def test_a_batch_image_column_takes_file_bytes_or_their_base64() -> None:
    """A batch job's ``image`` column: bytes (Parquet) or base64 text (JSON Lines, a replayed
    ``/v1/images/classify_batch`` request) decode alike; bad base64 is that row's reason."""
    png = encode(IMAGES[0])
    table = pa.table({"image": [b64(png), "not base64!"]})
    columns, reasons = decode_column(table)
    assert np.array_equal(columns["images"][0], IMAGES[0]) and reasons[0] is None
    assert reasons[1] == "image: not valid base64 (standard alphabet, padded)"
    by_bytes, none = decode_column(pa.table({"image": [png]}))
    assert np.array_equal(by_bytes["images"][0], IMAGES[0]) and none[0] is None
