"""Property: whatever bytes a .safetensors file holds, loading it gives tensors or the
project's own error (ModelError, one line for the user), never anything else: no other
exception, no crash, no read outside the file. Random bytes, and headers built from hostile
values (negative, fractional, huge and wrongly typed shapes and offsets, overlaps, gaps)."""

from __future__ import annotations

import json
import struct

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engines.errors import ModelError
from engines.model.safetensors_mmap import TensorRef, read_safetensors

SETTINGS = settings(max_examples=1500, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

numbers = st.one_of(st.integers(-3, 40), st.integers(-(2**64), 2**64), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from(["2", None, True, [], {}]))
entry = st.fixed_dictionaries({
    "dtype": st.sampled_from(["F32", "F16", "BF16", "F64", "I8", "U8", "BOOL", "Q4", 7]),
    "shape": st.one_of(st.lists(numbers, max_size=3), numbers),
    "data_offsets": st.one_of(st.lists(numbers, min_size=2, max_size=2), st.lists(numbers, max_size=3), numbers),
})
headers = st.dictionaries(st.text(min_size=1, max_size=8), entry, max_size=4)


def load(tmp_path, blob: bytes):
    p = tmp_path / "model.safetensors"
    p.write_bytes(blob)
    try:
        out = read_safetensors(str(p))
    except ModelError as e:
        assert "\n" not in str(e)
        return None
    assert all(isinstance(t, TensorRef) for t in out.values())
    for t in out.values():  # views inside the file: every byte readable
        assert t.nbytes <= len(blob)
        np.asarray(t.array).sum()
    return out


@SETTINGS
@given(blob=st.binary(max_size=256))
def test_random_bytes(tmp_path, blob):
    load(tmp_path, blob)


@SETTINGS
@given(header=headers, data=st.binary(max_size=96), fix_len=st.booleans(), junk=st.binary(max_size=4))
def test_hostile_headers(tmp_path, header, data, fix_len, junk):
    raw = json.dumps(header, allow_nan=True).encode() + junk
    n = len(raw) if fix_len else len(raw) + len(junk) * 1000
    load(tmp_path, struct.pack("<Q", n) + raw + data)


@SETTINGS
@given(shapes=st.lists(st.lists(st.integers(0, 5), max_size=3), min_size=1, max_size=4), cut=st.integers(0, 200))
def test_valid_files_cut_anywhere(tmp_path, shapes, cut):
    """Well-formed files load exactly; the same files truncated at any byte are refused."""
    header, offset, arrays = {}, 0, []
    for i, shape in enumerate(shapes):
        a = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
        header[f"t{i}"] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
        arrays.append(a)
    raw = json.dumps(header).encode()
    blob = struct.pack("<Q", len(raw)) + raw + b"".join(a.tobytes() for a in arrays)
    out = load(tmp_path, blob)
    assert out is not None
    for i, a in enumerate(arrays):
        np.testing.assert_array_equal(out[f"t{i}"].array, a)
    if cut < len(blob) and offset:
        load(tmp_path, blob[:cut])
