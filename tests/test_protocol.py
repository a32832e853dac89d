"""Level 1: framing, codec, authentication and value serialization, in-process."""
import itertools
import pickle

import numpy as np
import pytest

from shoal.protocol import auth, codec
from shoal.protocol import messages as m
from shoal.protocol.framing import IOV_BATCH, FrameDecoder, ProtocolError, encode_frame, write_gathered
from shoal.protocol.serialization import (INLINE_LIMIT, SerializationError, deserialize, dumps,
                                          serialize)


def feed_bytewise(decoder, chunks):
    frames = []
    for chunk in chunks:
        data = bytes(chunk)
        for i in range(len(data)):
            frames += decoder.feed(data[i:i + 1])
    return frames


def test_frames_survive_any_split():
    chunks = encode_frame(b"header", [b"abc", b"", memoryview(b"xyz" * 100)])
    frames = feed_bytewise(FrameDecoder(), chunks)
    assert frames == [(b"header", [b"abc", b"", b"xyz" * 100])]


def test_many_frames_in_one_read():
    data = b"".join(bytes(c) for i in range(50) for c in encode_frame(str(i).encode()))
    frames = FrameDecoder().feed(data)
    assert [h for h, _ in frames] == [str(i).encode() for i in range(50)]


def test_large_frames_are_read_straight_into_their_place():
    """A large buffer's bytes go from the socket into the body they are decoded
    from: after the prefix, get_buffer() hands out that body itself."""
    payload = bytes(range(256)) * 40_000                   # ~10 MB
    prefix, header, _ = encode_frame(b"h", [payload])
    decoder = FrameDecoder()
    assert decoder.feed(prefix + header + payload[:1000]) == []
    target = decoder.get_buffer()
    assert target.nbytes == len(payload) - 1000
    target[:] = payload[1000:]
    decoder.buffer_updated(target.nbytes)
    header_out, [buf] = decoder.next_frame()
    assert header_out == b"h" and buf == payload and buf.obj is target.obj


def test_frames_stay_valid_after_later_reads():
    """Decoded frames are views of their own bodies, not of the reused staging buffer."""
    decoder = FrameDecoder()
    first = decoder.feed(b"".join(bytes(c) for c in encode_frame(b"one", [b"A" * 100])))
    decoder.feed(b"".join(bytes(c) for c in encode_frame(b"two", [b"B" * 100])) * 3000)
    assert first == [(b"one", [b"A" * 100])]


def test_bytes_after_a_frame_are_left_unparsed():
    decoder = FrameDecoder()
    raw = b"\xff" * 64                                     # would be an oversized frame prefix
    data = b"".join(encode_frame(b"x")) + raw
    decoder.get_buffer()[:len(data)] = data
    decoder.buffer_updated(len(data))
    assert decoder.next_frame()[0] == b"x"
    assert decoder.take_pending() == raw


def test_a_frame_over_the_message_limit_is_refused_before_anything_is_allocated():
    import struct
    from shoal.protocol.framing import MAX_MESSAGE, FrameTooLargeError
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(struct.pack("<IIQ", 1, 1, (1 << 40) - 1) + b"h" + b"x" * 100)
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(struct.pack("<IIQ", 100, 1, MAX_MESSAGE - 99) + b"h")
    with pytest.raises(FrameTooLargeError):              # out-of-band buffers count too
        encode_frame(b"h", [bytearray(MAX_MESSAGE)])


def test_oversized_header_is_a_protocol_error():
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(b"\xff\xff\xff\x7f\x00\x00\x00\x00")


def test_codec_round_trips_every_field():
    entry = m.ObjectEntry("o1", inline=b"v", size=1)
    msg = m.SubmitTask(task_id="t", func_id="f", name="n", args=b"a", deps=["d"], nested=[],
                       return_ids=["t/0"], resources={"CPU": 1.0}, max_retries=2,
                       parent_task_id="p")
    for original in (msg, m.ObjectsReady(entries=[entry]), m.Shutdown()):
        [(header, buffers)] = FrameDecoder().feed(b"".join(bytes(c) for c in codec.encode(original)))
        assert codec.decode(header, buffers) == original


def test_codec_round_trips_every_message_type_field_by_field():
    """Decoding builds the tuple itself (not through __new__): every field of every
    type must come back, each with its own value."""
    for cls in m.MESSAGE_TYPES:
        original = cls(**{name: f"{cls.__name__}.{name}" for name in m.fields_of(cls)})
        [(header, buffers)] = FrameDecoder().feed(b"".join(bytes(c) for c in codec.encode(original)))
        decoded = codec.decode(header, buffers)
        assert type(decoded) is cls and decoded == original
        assert [getattr(decoded, name) for name in m.fields_of(cls)] == list(original)


def test_messages_keep_the_contract_of_frozen_keyword_only_records():
    """Messages are tuples (messages.py) that keep what the dataclasses they were
    promised: defaults, a fresh default_factory value each, keyword-only,
    required fields, immutable, equal only to their own type, replace()."""
    a, b = m.TaskFinished(task_id="a", results=[]), m.TaskFinished(task_id="b", results=[])
    assert a.nested == [] and a.nested is not b.nested and a.ran_for == 0.0
    with pytest.raises(AttributeError):
        a.task_id = "c"
    with pytest.raises(AttributeError):
        a.bogus = 1
    for bad in (lambda: m.TaskFinished("a", []), lambda: m.TaskFinished(task_id="a"),
                lambda: m.TaskFinished(task_id="a", results=[], bogus=1)):
        with pytest.raises(TypeError):
            bad()
    assert m.replace(a, task_id="z") == m.TaskFinished(task_id="z", results=[])
    for cls in m.MESSAGE_TYPES:
        msg = cls(**{name: name for name in m.fields_of(cls)})
        for i, name in enumerate(m.fields_of(cls)):
            changed = m.replace(msg, **{name: 1})
            assert type(changed) is cls and getattr(changed, name) == 1
            assert [v for j, v in enumerate(changed) if j != i] == \
                [v for j, v in enumerate(msg) if j != i]
        assert m.replace(msg) == msg and hash(m.replace(msg)) == hash(msg)
        assert bool(cls(**{name: None for name in m.fields_of(cls)}))    # even with no fields
        assert repr(msg).startswith(f"{cls.__name__}(")
    with pytest.raises(TypeError, match="no field 'bogus'"):
        m.replace(a, bogus=1)
    assert pickle.loads(pickle.dumps(a)) == a and m.Shutdown() == m.Shutdown(reason="")
    # Equal fields are not equal messages across types (a plain tuple would say so).
    assert m.Shutdown(reason="x") != m.Notice(text="x") and m.Shutdown(reason="x") != ("x",)


def test_codec_sends_pickle_buffers_out_of_band():
    payload = bytearray(b"x" * 1000)
    msg = m.RegisterFunction(func_id="f", name="n", blob=pickle.PickleBuffer(payload))
    chunks = codec.encode(msg)
    assert len(chunks) == 3 and chunks[2].obj is payload       # prefix, header, the payload itself


@pytest.mark.parametrize("header", [b"garbage", pickle.dumps((999, 1)), pickle.dumps("x"),
                                    pickle.dumps((0,)), pickle.dumps((0,) + ("x",) * 100),
                                    pickle.dumps((-1,)), pickle.dumps(None)])
def test_codec_rejects_malformed_messages(header):
    with pytest.raises(ProtocolError):
        codec.decode(header, [])


def test_auth_accepts_the_right_key_only():
    key, server_nonce = b"k" * 32, auth.new_nonce()
    proof, client_nonce = auth.client_proof(key, server_nonce)
    reply = auth.check_client_proof(key, server_nonce, proof)
    auth.check_server_proof(key, server_nonce, client_nonce, reply)
    with pytest.raises(auth.AuthenticationError):
        auth.check_client_proof(b"other" * 8, server_nonce, proof)
    with pytest.raises(auth.AuthenticationError):
        auth.check_client_proof(key, auth.new_nonce(), proof)       # replay on a new challenge
    with pytest.raises(auth.AuthenticationError):
        auth.check_server_proof(b"other" * 8, server_nonce, client_nonce, reply)


def test_values_round_trip_with_out_of_band_arrays():
    arr = np.arange(100_000, dtype=np.float64)
    s = serialize({"a": arr, "b": [1, "two"]})
    assert len(s.buffers) == 1 and s.size > arr.nbytes
    out = deserialize(s.to_bytes())
    assert np.array_equal(out["a"], arr) and out["b"] == [1, "two"]
    assert s.offsets[0] % 64 == 0      # aligned in the layout, so aligned in a page-aligned map


def test_small_values_stay_small():
    assert len(dumps(42)) < 64
    assert serialize(list(range(10))).size < INLINE_LIMIT


def test_local_functions_and_lambdas_serialize():
    k = 3
    f = lambda x: x * k          # noqa: E731
    assert deserialize(dumps(f))(2) == 6


def test_unpicklable_values_give_a_clear_error():
    import threading
    with pytest.raises(SerializationError, match="cannot serialize"):
        serialize(threading.Lock())


def test_corrupt_values_give_a_clear_error():
    with pytest.raises(SerializationError):
        deserialize(b"not a value at all")


def test_pickle_buffers_travel_out_of_band_and_arrive_read_only():
    payload = bytearray(b"p" * 5000)
    msg = m.ObjectsReady(entries=[m.ObjectEntry("o", inline=pickle.PickleBuffer(payload), size=5000)])
    chunks = codec.encode(msg)
    assert len(chunks[1]) < 200                                   # not in the header...
    payload[0:1] = b"q"
    assert bytes(chunks[-1][:2]) == b"qp"                         # ...and not copied
    [(header, buffers)] = FrameDecoder().feed(b"".join(bytes(c) for c in chunks))
    inline = codec.decode(header, buffers).entries[0].inline
    assert type(inline) is pickle.PickleBuffer and inline.raw().readonly
    assert inline.raw() == payload


def test_packed_values_go_out_of_band_unless_tiny():
    from shoal.protocol.serialization import OUT_OF_BAND_MIN
    assert type(serialize(1).packed()) is bytes
    big = serialize(b"x" * OUT_OF_BAND_MIN).packed()
    assert type(big) is pickle.PickleBuffer and deserialize(big) == b"x" * OUT_OF_BAND_MIN


# The decoder against arbitrary input: valid frames in any split come out whole
# and equal; any bytes at all either parse or raise ProtocolError.
from hypothesis import given, settings, strategies as st  # noqa: E402

_frames = st.lists(st.tuples(st.binary(max_size=300),
                             st.lists(st.binary(max_size=70_000), max_size=3)), max_size=6)


@settings(max_examples=60, deadline=None)
@given(_frames, st.lists(st.integers(1, 200_000), min_size=1, max_size=20))
def test_decoder_gives_back_any_frames_in_any_split(frames, cuts):
    data = b"".join(bytes(c) for h, bufs in frames for c in encode_frame(h, bufs))
    decoder, out, at, i = FrameDecoder(), [], 0, 0
    while at < len(data):
        n = cuts[i % len(cuts)]
        i += 1
        buf = decoder.get_buffer()                         # as a socket's recv_into would
        n = min(n, buf.nbytes, len(data) - at)
        buf[:n] = data[at:at + n]
        decoder.buffer_updated(n)
        at += n
        while (frame := decoder.next_frame()) is not None:
            out.append(frame)
    assert [(bytes(h), [bytes(b) for b in bufs]) for h, bufs in out] == frames


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_decoder_meets_any_bytes_with_frames_or_a_protocol_error(data):
    """Only ProtocolError escapes (the owner closes the connection on it)."""
    try:
        frames = FrameDecoder().feed(data)
    except ProtocolError:
        return
    for header, buffers in frames:
        try:
            codec.decode(header, buffers)
        except ProtocolError:
            pass


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=50), max_size=IOV_BATCH + 40),
       st.lists(st.one_of(st.integers(0, 400), st.none()), min_size=1, max_size=30))
def test_gathered_writes_keep_every_byte_in_order(chunks, takes):
    """Partial writes resume inside a chunk; a stopping error hands back
    exactly the rest, which a later write finishes (as the transport does)."""
    written = bytearray()
    calls = itertools.chain(takes, itertools.repeat(10**6))     # then it takes all

    def writev(batch):
        assert len(batch) <= IOV_BATCH
        take = next(calls)
        if take is None:
            raise BlockingIOError
        data = b"".join(bytes(b) for b in batch)[:max(take, 1)]
        written.extend(data)
        return len(data)

    rest = write_gathered(writev, list(chunks), stop=BlockingIOError)
    assert bytes(written) + b"".join(bytes(c) for c in rest) == b"".join(chunks)
    while rest:
        rest = write_gathered(writev, rest, stop=BlockingIOError)
    assert bytes(written) == b"".join(chunks)


def test_a_kept_result_does_not_pin_its_siblings_frame():
    """The scheduler keeps each result of a task on its own: decoding copies
    the values of a several-result TaskFinished apart; a lone one stays a view."""
    from shoal.protocol.messages import ObjectEntry
    values = [serialize(str(i) * 2000).packed() for i in range(3)]

    def wire(msg):
        [frame] = FrameDecoder().feed(b"".join(bytes(c) for c in codec.encode(msg)))
        return codec.decode(*frame)
    many = wire(m.TaskFinished(task_id="t", results=[
        ObjectEntry(f"t/{i}", inline=v) for i, v in enumerate(values)]))
    assert [type(e.inline) for e in many.results] == [bytes] * 3
    assert [deserialize(e.inline) for e in many.results] == [str(i) * 2000 for i in range(3)]
    one = wire(m.TaskFinished(task_id="t", results=[ObjectEntry("t/0", inline=values[0])]))
    assert type(one.results[0].inline) is pickle.PickleBuffer
    assert deserialize(one.results[0].inline) == "0" * 2000


from hypothesis.extra import numpy as hnp  # noqa: E402


@settings(max_examples=80, deadline=None)
@given(hnp.arrays(dtype=st.one_of(hnp.scalar_dtypes(), hnp.byte_string_dtypes(),
                                  hnp.unicode_string_dtypes()),
                  shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=6)),
       st.sampled_from(["C", "F", "strided"]))
def test_numpy_arrays_of_any_plain_dtype_round_trip_exactly(arr, layout):
    """Arrays without Python objects inside take plain pickle (serialization.py's
    fast path); what comes back equals what plain pickle gives back."""
    if layout == "F":
        arr = np.asfortranarray(arr)
    elif layout == "strided" and arr.ndim:
        arr = arr[::2]
    s = serialize(arr)
    out = deserialize(s.to_bytes())
    expect = pickle.loads(pickle.dumps(arr, protocol=5))
    assert type(out) is np.ndarray and out.dtype == expect.dtype and out.shape == expect.shape
    assert out.tobytes() == expect.tobytes() and s.nested == []


def test_object_arrays_and_array_subclasses_keep_cloudpickle():
    f = lambda x: x + 1             # noqa: E731 -- only cloudpickle can carry a lambda
    out = deserialize(serialize(np.array([f, 2], dtype=object)).to_bytes())
    assert out[0](1) == 2 and out[1] == 2
    masked = np.ma.array([1, 2, 3], mask=[0, 1, 0])
    back = deserialize(serialize(masked).to_bytes())
    assert type(back) is np.ma.MaskedArray and back.mask.tolist() == [False, True, False]


def test_refs_inside_plain_arguments_are_noted():
    from shoal.core.object_ref import ObjectRef
    refs = [ObjectRef("c1.t1/0"), ObjectRef("c1.t2/0")]
    s = serialize(((refs[0], 1), {"k": [refs[1]]}))
    assert s.nested == ["c1.t1/0", "c1.t2/0"]
    (a, _), kw = deserialize(s.to_bytes())
    assert type(a) is ObjectRef and a.id == "c1.t1/0" and kw["k"][0].id == "c1.t2/0"


# ---- batches: several messages in one frame (codec.encode_many) ---------------------------

def _frames(chunks):
    return FrameDecoder().feed(b"".join(bytes(c) for c in chunks))


def _finished(i, inline=b"v"):
    entry = m.ObjectEntry(f"c.t{i}/0", inline=inline, size=memoryview(inline).nbytes)
    return m.TaskFinished(task_id=f"c.t{i}", results=[entry], ran_for=i / 1000)


def test_messages_without_buffers_share_a_frame_and_come_back_in_order():
    msgs = [_finished(i) for i in range(5)] + [m.Heartbeat(), m.RevokeTask(task_id="x")]
    frames = _frames(codec.encode_many(msgs))
    assert len(frames) == 1
    assert codec.decode_frame(*frames[0]) == msgs
    with pytest.raises(ProtocolError):                  # decode() takes one message only
        codec.decode(*frames[0])


def test_a_message_with_an_out_of_band_buffer_keeps_its_own_frame():
    """A value its receiver keeps must not keep its neighbours' frame alive."""
    big = pickle.PickleBuffer(bytearray(b"x" * 5000))
    msgs = [_finished(0), _finished(1, inline=big), _finished(2)]
    frames = _frames(codec.encode_many(msgs))
    assert len(frames) == 3 and [len(b) for _, b in frames] == [0, 1, 0]
    out = [msg for f in frames for msg in codec.decode_frame(*f)]
    assert [msg.task_id for msg in out] == ["c.t0", "c.t1", "c.t2"]
    assert out[1].results[0].inline.raw().tobytes() == b"x" * 5000


def test_batches_are_split_at_their_limits(monkeypatch):
    assert len(_frames(codec.encode_many([_finished(i) for i in range(600)]))) == 3
    monkeypatch.setattr(codec, "BATCH_BYTES", 500)          # too big a batch: a frame each
    assert len(_frames(codec.encode_many([_finished(i) for i in range(10)]))) == 10


@pytest.mark.parametrize("header", [pickle.dumps([]), pickle.dumps([(0,)]),
                                    pickle.dumps([("x",), ("y",)]), pickle.dumps([(999,), (0,)])])
def test_malformed_batches_are_protocol_errors(header):
    with pytest.raises(ProtocolError):
        codec.decode_frame(header, [])


def test_a_batch_with_buffers_is_refused():
    [(header, _)] = _frames(codec.encode_many([m.Heartbeat(), m.Heartbeat()]))
    with pytest.raises(ProtocolError):
        codec.decode_frame(header, [memoryview(b"stray")])


def test_a_connection_hands_out_a_batch_one_message_at_a_time():
    import socket
    from shoal.protocol.connection import Connection
    a, b = socket.socketpair()
    left, right = Connection(a), Connection(b)
    msgs = [_finished(i) for i in range(4)]
    left.send_many(msgs)
    left.send(m.Heartbeat())
    assert [right.recv() for _ in range(5)] == msgs + [m.Heartbeat()]
    left.send_many(msgs[:2])
    assert right.recv() == msgs[0]
    with pytest.raises(ProtocolError):              # a raw stream cannot follow a half-read batch
        right.take_buffered()
    assert right.recv_ready() == [msgs[1]]
    left.close()
    right.close()


_any_message = st.sampled_from(m.MESSAGE_TYPES).flatmap(
    lambda cls: st.fixed_dictionaries({
        name: st.one_of(st.none(), st.integers(), st.text(max_size=20), st.binary(max_size=20),
                        st.lists(st.text(max_size=5), max_size=3))
        for name in m.fields_of(cls)}).map(lambda kw: cls(**kw)))


@settings(max_examples=60, deadline=None)
@given(st.lists(_any_message, min_size=1, max_size=40), st.lists(st.integers(1, 400), min_size=1))
def test_any_messages_batched_come_back_equal_in_any_split(msgs, cuts):
    data = b"".join(bytes(c) for c in codec.encode_many(msgs))
    decoder, out, at, i = FrameDecoder(), [], 0, 0
    while at < len(data):
        buf = decoder.get_buffer()
        n = min(cuts[i % len(cuts)], buf.nbytes, len(data) - at)
        i += 1
        buf[:n] = data[at:at + n]
        decoder.buffer_updated(n)
        at += n
        while (frame := decoder.next_frame()) is not None:
            out.extend(codec.decode_frame(*frame))
    assert out == msgs


def test_a_message_that_cannot_be_encoded_is_dropped_alone_at_flush():
    """The scheduler's connections encode at flush: a message that fails (too large,
    unpicklable) is logged and dropped, a query gets an error reply, the rest go,
    and the next flush starts clean."""
    from shoal.protocol.server import ServerConnection

    class Transport:
        def __init__(self):
            self.written = []

        def get_write_buffer_size(self):
            return 1                         # never the direct path: collect the chunks

        def writelines(self, chunks):
            self.written.append(b"".join(bytes(c) for c in chunks))

    conn = ServerConnection(b"k" * 32, None, None, None)
    conn.transport = Transport()

    def sent():
        data, conn.transport.written = b"".join(conn.transport.written), []
        return [msg for f in FrameDecoder().feed(data) for msg in codec.decode_frame(*f)]

    conn.send(m.Heartbeat())
    conn.send(m.QueryReply(request_id=7, value=lambda: 0))       # cannot be pickled
    conn.send(m.RevokeTask(task_id="t"))
    conn.flush()
    out = sent()
    assert [type(x) for x in out] == [m.Heartbeat, m.QueryReply, m.RevokeTask]
    assert out[1].request_id == 7 and "not sendable" in out[1].error
    conn.send(m.Heartbeat())
    conn.send(m.Heartbeat())
    conn.flush()
    assert sent() == [m.Heartbeat(), m.Heartbeat()]


def test_a_malformed_kept_apart_message_is_a_protocol_error():
    header = pickle.dumps((codec._CODES[m.ObjectsReady], 5), protocol=5)
    with pytest.raises(ProtocolError):
        codec.decode_frame(header, [memoryview(b"a"), memoryview(b"b")])


def test_arrays_whose_dtype_may_name_run_time_code_keep_cloudpickle():
    """A structured dtype or one with metadata may carry classes or functions made
    in a notebook: plain pickle names them by reference (or cannot pickle them),
    cloudpickle carries them."""
    unit = lambda x: x * 2                       # noqa: E731 -- made at run time
    arr = np.zeros(3, dtype=np.dtype("f8", metadata={"unit": unit}))
    back = deserialize(serialize(arr).to_bytes())
    assert back.dtype.metadata["unit"](2) == 4
    from shoal.protocol.serialization import _flat_array
    assert not _flat_array(np.zeros(2, dtype=[("a", "i4")]))
    assert not _flat_array(np.zeros(2, dtype=np.dtype("f8", metadata={"k": 1})))
    assert _flat_array(np.zeros(2, dtype="M8[s]")) and _flat_array(np.zeros(2, dtype=">i4"))


_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                     st.text(max_size=20), st.binary(max_size=40), st.complex_numbers(allow_nan=False))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=20), st.tuples(inner, inner),
    st.dictionaries(st.one_of(st.text(max_size=5), st.integers()), inner, max_size=20),
    st.frozensets(st.integers(), max_size=5)), max_leaves=40)


@settings(max_examples=200, deadline=None)
@given(_values)
def test_any_builtin_value_round_trips_with_its_type_and_one_layout(value):
    """Plain values (scalars in small, shallow containers: plain pickle) and the
    rest (cloudpickle) both come back equal, with the same types; a small value
    packs to the same bytes as its full layout, and names its type."""
    s = serialize(value)
    packed = s.packed()
    if isinstance(packed, bytes):
        assert packed == s.to_bytes()
    assert len(bytes(packed)) == s.size
    out = deserialize(packed)
    assert out == value and type(out) is type(value)
    assert _types(out) == _types(value)
    assert s.type_name == type(value).__name__ and s.nested == []


def _types(value):
    if isinstance(value, (list, tuple)):
        return type(value), [_types(v) for v in value]
    if isinstance(value, dict):
        return dict, [(type(k), _types(v)) for k, v in value.items()]
    return type(value)
