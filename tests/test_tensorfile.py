"""The safetensors reader of artifacts/tensorfile.py against the reference reader, its
refusals, and the reusable buffers that phase two's loader reads into."""
from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import load as reference_load

from ssl_dynamics import artifacts as art
from ssl_dynamics.artifacts.checkpoint import check_state
from ssl_dynamics.artifacts.tensorfile import Buffers, read_file, safetensors_bytes, tensors_of
from ssl_dynamics.errors import UserError


def _state():
    g = torch.Generator().manual_seed(0)
    return {  # sorted names put odd-sized bf16 tensors before wider ones: offsets misalign
        "a.weight": torch.randn(3, 5, generator=g).bfloat16(),  # 30 bytes
        "b.running_mean": torch.randn(7, generator=g),  # F32 at offset 30
        "c.num_batches_tracked": torch.tensor(12345678901, dtype=torch.int64),  # 0-dim I64
        "d.empty": torch.empty(0, 4),
        "e.weight": torch.randn(4, 4, generator=g),
        "f.mask": torch.tensor([True, False, True]),
    }


def _tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def test_reader_equals_the_reference_reader_and_views_the_buffer():
    data = safetensors_bytes(_state(), {"k": "v"})
    buf = _tensor(data)
    state, metadata = tensors_of(buf, "x")
    ref = reference_load(data)
    assert metadata == {"k": "v"} and state.keys() == ref.keys()
    for k in ref:
        assert state[k].dtype == ref[k].dtype and state[k].shape == ref[k].shape
        assert torch.equal(state[k], ref[k]), k
    for k, t in state.items():  # each in place, or copied out to an aligned address
        assert t.data_ptr() % t.element_size() == 0, k


def test_aligned_tensors_view_the_files_bytes(tmp_path):
    path = tmp_path / "f.safetensors"
    path.write_bytes(safetensors_bytes({"a": torch.arange(6.0), "b": torch.arange(3, dtype=torch.int64)}, {}))
    buf = read_file(path)  # a fresh torch buffer: aligned, with an 8-aligned data section
    state, _ = tensors_of(buf, path)
    lo, hi = buf.data_ptr(), buf.data_ptr() + len(buf)
    assert all(lo <= t.data_ptr() < hi for t in state.values())  # views, not copies
    buf[-8:] = 0  # the bytes of b[2]
    assert state["b"].tolist() == [0, 1, 0]


def _with_header(edit) -> bytes:
    data = safetensors_bytes({"w": torch.arange(4.0), "z": torch.arange(2.0)}, {})
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    header, body = edit(header, body)
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + body


@pytest.mark.parametrize("edit, message", [
    (lambda h, b: ({**h, "w": {**h["w"], "dtype": "Q9"}}, b), "unknown dtype"),
    (lambda h, b: ({**h, "w": {**h["w"], "shape": [5]}}, b), "bytes for shape"),
    (lambda h, b: ({**h, "w": {**h["w"], "shape": [-4]}}, b), "invalid shape"),
    (lambda h, b: ({**h, "w": {**h["w"], "data_offsets": [16, 0]}}, b), "invalid data offsets"),
    (lambda h, b: ({**h, "z": {**h["z"], "data_offsets": [8, 16]}}, b), "does not start where"),
    (lambda h, b: (h, b + b"\0" * 8), "8 bytes after the last tensor"),
    (lambda h, b: (h, b[:-4]), "runs past the end"),
])
def test_malformed_headers_are_refused(edit, message):
    with pytest.raises(UserError, match=f"corrupt checkpoint x: .*{message}"):
        tensors_of(_tensor(_with_header(edit)), "x")


def _raw(header: dict | str, body: bytes = b"") -> bytes:
    text = header.encode("utf-8") if isinstance(header, str) else json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + body


@pytest.mark.parametrize("data, message", [
    (_raw('{"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, '
          '"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}', b"\1"), "names w twice"),
    (_raw({"w": {"dtype": "U8", "shape": [True], "data_offsets": [0, 1]}}, b"\1"), "invalid shape"),
    (_raw({"w": {"dtype": "F32", "shape": [0, 2**62], "data_offsets": [0, 0]}}), "invalid shape"),
    (_raw({"w": {"dtype": "F32", "shape": [0, 2**40, 2**40], "data_offsets": [0, 0]}}), "tensor w:"),
    (_raw({"__metadata__": {"a": 1}}), "unreadable header"),
    (_raw({"__metadata__": None}), "unreadable header"),
    (len(b'{}'.decode().encode("utf-16")).to_bytes(8, "little") + "{}".encode("utf-16"), "unreadable header"),
])
def test_headers_outside_the_format_are_refused(data, message):
    with pytest.raises(UserError, match=f"corrupt checkpoint x: .*{message}"):
        tensors_of(_tensor(data), "x")


@pytest.mark.parametrize("data", [b"", b"\1\0\0", (2**40).to_bytes(8, "little") + b"{}", b"\4\0\0\0\0\0\0\0[1] "])
def test_garbage_is_refused(data):
    with pytest.raises(UserError, match="corrupt checkpoint x"):
        tensors_of(_tensor(data) if data else torch.empty(0, dtype=torch.uint8), "x")


class _Event:
    def __init__(self, done: bool = False):
        self.waited, self.done = 0, done

    def query(self):
        return self.done

    def synchronize(self):
        self.waited += 1


def test_a_buffer_whose_copy_has_run_is_taken_first(tmp_path):
    buffers = Buffers()
    a, b = buffers.take(10), buffers.take(10)
    pending, ran = _Event(done=False), _Event(done=True)
    buffers.give(a, pending)
    buffers.give(b, ran)
    c = buffers.take(10)
    assert c.data_ptr() == b.data_ptr() and ran.waited == 1 and pending.waited == 0


def test_buffers_are_reused_only_after_their_copy_ran(tmp_path):
    small, big = tmp_path / "s", tmp_path / "b"
    small.write_bytes(bytes(range(100)))
    big.write_bytes(bytes(range(200)) * 3)
    buffers = Buffers()
    a = read_file(big, buffers)
    assert bytes(a.numpy()) == big.read_bytes()
    b = read_file(small, buffers)  # a is still out: a second buffer
    assert a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr()
    event = _Event()
    buffers.give(a[10:20], event)  # any view of the buffer gives it back
    c = read_file(small, buffers)  # fits in a's buffer: reused, after the event
    assert c.untyped_storage().data_ptr() == a.untyped_storage().data_ptr() and event.waited == 1
    assert bytes(c.numpy()) == small.read_bytes()
    d = read_file(big, buffers)  # b's buffer is still out and c holds a's: a new one
    assert d.untyped_storage().data_ptr() not in {a.untyped_storage().data_ptr(), b.untyped_storage().data_ptr()}


def test_a_checkpoint_loads_the_same_through_reused_buffers(tmp_path):
    from ssl_dynamics.models import build_network

    buffers, paths, nets = Buffers(), [], []
    for e in range(3):
        torch.manual_seed(e)
        nets.append(build_network("resnet18_cifar", 10, 4))
        path = tmp_path / "seed-00" / f"epoch-{e:04d}.safetensors"
        path.parent.mkdir(exist_ok=True)
        art.save_checkpoint(path, nets[-1], {"backbone": "resnet18_cifar", "head_dim": 10, "width": 4}, torch.bfloat16)
        paths.append(path)
    for path, net in zip(paths * 2, nets * 2):
        data = art.verified_bytes(path, verify=False, buffers=buffers)
        state, _ = art.load_weights(path, data=data, views=True)
        want = art.model_state(net, torch.bfloat16)
        assert all(torch.equal(state[k], want[k]) for k in want)
        buffers.give(data)
    assert len(buffers._free) == 1  # one buffer served all six reads


@pytest.mark.parametrize("values", [[float("inf"), float("-inf")], [3e38, 3e38, float("nan")]])
def test_non_finite_weights_are_found_whatever_their_sum(values):
    ok = {"ok": torch.full((4,), 3e38)}  # overflows its sum, all finite: passes the exact check
    state = {**ok, "bad": torch.tensor(values)}
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    with pytest.raises(UserError, match="non-finite weights .* in bad"):
        check_state(state, shapes, "x")
    check_state(ok, {"ok": (4,)}, "x")
    check_state({"h": torch.tensor([float("nan")]).bfloat16()[:0]}, {"h": (0,)}, "x")  # empty: nothing to check
    with pytest.raises(UserError, match="in h"):
        check_state({"h": torch.tensor([1.0, float("nan")]).bfloat16()}, {"h": (2,)}, "x")


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64, torch.bfloat16])
def test_the_finiteness_check_in_every_float_dtype(dtype):
    big = torch.finfo(dtype).max
    fine = {"w": torch.full((8,), big, dtype=dtype), "n": torch.tensor([2**62, 2**62], dtype=torch.int64)}
    check_state(fine, {"w": (8,), "n": (2,)}, "x")  # integers are not floats: no check, no overflow
    for bad in (float("nan"), float("inf")):
        state = {**fine, "w": torch.tensor([1.0, bad], dtype=dtype)}
        with pytest.raises(UserError, match="in w"):
            check_state(state, {"w": (2,), "n": (2,)}, "x")


def test_loaded_networks_own_their_tensors(tmp_path):
    import io

    from ssl_dynamics.models import build_network

    torch.manual_seed(0)
    path = tmp_path / "seed-00" / "epoch-0000.safetensors"
    path.parent.mkdir()
    art.save_checkpoint(path, build_network("resnet18_cifar", 10, 4), {"backbone": "resnet18_cifar", "head_dim": 10, "width": 4})
    net, _ = art.load_network(path, verify=False)
    torch.save(net.state_dict(), io.BytesIO())  # views of one uint8 storage could not be saved
    state, _ = art.load_weights(path, verify=False)
    assert len({t.untyped_storage().data_ptr() for t in state.values()}) == len(state)


def test_a_file_that_changes_while_read_is_refused_and_its_buffer_given_back(tmp_path, monkeypatch):
    import builtins

    from ssl_dynamics.artifacts import tensorfile

    path = tmp_path / "f.safetensors"
    path.write_bytes(bytes(64))

    class Growing:  # reports 16 bytes at the end-seek, then finds 64: another writer appended
        def __init__(self, f):
            self.f = f

        def seek(self, offset, whence=0):
            return 16 if whence == 2 else self.f.seek(offset, whence)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(tensorfile, "open", lambda *a, **k: Growing(builtins.open(*a, **k)), raising=False)
    buffers = Buffers()
    with pytest.raises(UserError, match=f"^{path} changed while it was read$"):
        read_file(path, buffers)
    assert not buffers._taken and len(buffers._free) == 1


def test_a_refused_checksum_gives_the_buffer_back(tmp_path):
    from ssl_dynamics.models import build_network

    path = tmp_path / "seed-00" / "epoch-0001.safetensors"
    path.parent.mkdir()
    art.save_checkpoint(path, build_network("resnet18_cifar", 10, 4), {"backbone": "resnet18_cifar", "head_dim": 10, "width": 4})
    art.write_json_atomic(path.parent / "manifest.json", {"checkpoints": {"1": "0" * 64}})
    buffers = Buffers()
    with pytest.raises(UserError, match="epoch-0001.safetensors: its sha256 differs"):
        art.verified_bytes(path, True, buffers)
    assert not buffers._taken and len(buffers._free) == 1


def test_a_truncated_or_appended_checkpoint_is_named_as_such(tmp_path):
    from ssl_dynamics.artifacts.tensorfile import expected_size
    from ssl_dynamics.models import build_network

    path = tmp_path / "seed-00" / "epoch-0001.safetensors"
    path.parent.mkdir()
    art.save_checkpoint(path, build_network("resnet18_cifar", 10, 4), {"backbone": "resnet18_cifar", "head_dim": 10, "width": 4})
    whole = path.read_bytes()
    assert expected_size(path) == len(whole)
    art.write_json_atomic(path.parent / "manifest.json", {"checkpoints": {"1": art.sha256_file(path)}})
    for damaged, size in ((whole[:-100], len(whole) - 100), (whole + b"\0", len(whole) + 1)):
        path.write_bytes(damaged)
        with pytest.raises(UserError, match=f"epoch-0001.safetensors: it is {size} bytes where its header "
                                            f"implies {len(whole)} .cut short or appended to.; restore it"):
            art.verified_bytes(path, True)
    path.write_bytes(whole[:5])  # too short for a header: its size implies nothing
    assert expected_size(path) is None
    with pytest.raises(UserError, match="its sha256 differs from the one its manifest recorded"):
        art.verified_bytes(path, True)
