"""The program's side of balora.eval.sandbox: plain data across the pipe, and the worker.

The worker is a fresh interpreter, `python -I -S -c <stub> <this module, compiled> run|serve`, exec'd
by the checker with only the program: its memory, environment, argv and descriptors hold nothing of the
task's tests, expected outputs or reference solution (the checker keeps those). It reads the program
from `program.py` in its working directory, runs it as `__main__`, then (`serve`) answers the
checker's calls over two pipes, fd 3 (requests) and fd 4 (answers): plain-data arguments in, a
plain-data result or the name of the exception out. It imports only os, sys, struct and the `_json`
accelerator (not the `json` package, which imports `re`: ~10 ms per start-up), so that its start-up
stays cheap (it runs once per sample).

The checker imports this module for the same encoding: the decoder builds only plain types, so
nothing the program sends can carry its own methods (__eq__, __hash__, ...) into the checks.
"""

from __future__ import annotations

import os
import struct
import sys

MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # largest argument list / return value crossing the pipe
MAX_NESTING = 100  # deepest plain-data value accepted from the program
REQUESTS_FD, ANSWERS_FD = 3, 4  # the worker's ends of the two pipes


# --- JSON through the C accelerator the `json` package itself uses: same output, same strict parser ---


class _ScanContext:
    """What json.JSONDecoder hands the C scanner: strict strings, no hooks, NaN/Infinity as json accepts."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}.__getitem__


def _refuse(value):
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


try:
    from _json import encode_basestring_ascii as _c_escape
    from _json import make_encoder as _c_make_encoder
    from _json import make_scanner as _c_make_scanner

    # json.dumps(value) with its defaults (ensure_ascii, allow_nan, ", " and ": " separators).
    _c_encode = _c_make_encoder(None, _refuse, _c_escape, None, ": ", ", ", False, False, True)
    _c_scan = _c_make_scanner(_ScanContext())
except (ImportError, TypeError):  # an interpreter without CPython's accelerator
    _c_encode = _c_scan = None


def dumps(value) -> str:
    """json.dumps(value), without importing the json package."""
    if _c_encode is None:
        import json

        return json.dumps(value)
    return "".join(_c_encode(value, 0))


def loads(text: str):
    """json.loads(text) for compact JSON (no surrounding whitespace); ValueError when malformed."""
    if _c_scan is None:
        import json

        return json.loads(text)
    try:
        value, end = _c_scan(text, 0)
    except StopIteration:
        raise ValueError("empty JSON document") from None
    if end != len(text):
        raise ValueError(f"extra data after JSON value at {end}")
    return value


class NotPlainData(TypeError):
    """A value that is not plain data (None, bool, int, float, complex, str, bytes, list, tuple, dict, set)."""


def encode_plain(value, depth: int = 0):
    """Plain data -> JSON-able tagged form.

    An instance of a subclass of a plain type (collections.Counter, OrderedDict, defaultdict, a
    namedtuple, an IntEnum, numpy.float64) crosses as its base type, read through the base type's own
    methods: only the data crosses, so an overridden `__eq__` or `__iter__` plays no part in the checks.
    MBPP's own reference solutions return Counters that its tests compare with dict literals.
    """
    if depth > MAX_NESTING:
        raise NotPlainData(f"value nested deeper than {MAX_NESTING}")
    if value is None or type(value) is bool:
        return value
    if isinstance(value, int):
        return int.__int__(value)  # an exact int, whatever the subclass defines
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, (list, tuple, set)):
        kind = next(k for k in (list, tuple, set) if isinstance(value, k))
        return {"t": kind.__name__, "v": [encode_plain(item, depth + 1) for item in kind.__iter__(value)]}
    if isinstance(value, dict):
        return {
            "t": "dict",
            "v": [[encode_plain(k, depth + 1), encode_plain(v, depth + 1)] for k, v in dict.items(value)],
        }
    if isinstance(value, complex):
        return {"t": "complex", "v": [complex.real.__get__(value), complex.imag.__get__(value)]}
    if isinstance(value, bytes):
        return {"t": "bytes", "v": bytes.hex(value)}
    kind = type(value)
    raise NotPlainData(f"{kind.__module__}.{kind.__qualname__} is not plain data")


def decode_plain(obj, depth: int = 0):
    """Tagged form -> plain data; raises NotPlainData for anything else."""
    if depth > MAX_NESTING:
        raise NotPlainData(f"value nested deeper than {MAX_NESTING}")
    kind = type(obj)
    if obj is None or kind is bool or kind is int or kind is float or kind is str:
        return obj
    if kind is dict and set(obj) == {"t", "v"}:
        tag, items = obj["t"], obj["v"]
        try:
            if tag in ("list", "tuple", "set") and type(items) is list:
                values = [decode_plain(item, depth + 1) for item in items]
                return {"list": list, "tuple": tuple, "set": set}[tag](values)
            if tag == "dict" and type(items) is list:
                if not all(type(pair) is list and len(pair) == 2 for pair in items):
                    return _bad(obj)
                return {decode_plain(pair[0], depth + 1): decode_plain(pair[1], depth + 1) for pair in items}
            if (
                tag == "complex"
                and type(items) is list
                and len(items) == 2
                and all(type(x) in (int, float) for x in items)
            ):
                return complex(items[0], items[1])
            if tag == "bytes" and type(items) is str:
                return bytes.fromhex(items)
        except (TypeError, ValueError) as err:  # unhashable key / element, bad hex
            raise NotPlainData(f"malformed value: {err}") from None
    return _bad(obj)


def _bad(obj):
    raise NotPlainData(f"malformed value of type {type(obj).__name__}")


def send(fd: int, payload: dict) -> None:
    """Write one length-prefixed JSON message; NotPlainData when it exceeds MAX_MESSAGE_BYTES."""
    data = dumps(payload).encode()
    if len(data) > MAX_MESSAGE_BYTES:
        raise NotPlainData(f"value of {len(data)} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")
    data = struct.pack("<Q", len(data)) + data
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exact(fd: int, size: int) -> bytes | None:
    chunks, remaining = [], size
    while remaining:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def receive(fd: int) -> dict | None:
    """Read one message; None when the other side closed the pipe. Raises NotPlainData or ValueError
    (invalid JSON, invalid UTF-8) on a malformed one."""
    header = _read_exact(fd, 8)
    if header is None:
        return None
    (size,) = struct.unpack("<Q", header)
    if size > MAX_MESSAGE_BYTES:
        raise NotPlainData(f"message of {size} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")
    data = _read_exact(fd, size)
    if data is None:
        return None
    message = loads(data.decode("utf-8"))
    if type(message) is not dict:
        raise NotPlainData("malformed message")
    return message


class _Quitter:
    """`exit()` / `quit()`, which `site` would have defined (the worker runs with -S)."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"Use {self.name}() or Ctrl-D (i.e. EOF) to exit"

    def __call__(self, code=None):
        raise SystemExit(code)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken by the program
            pass


def _disable_sockets() -> None:
    """Best-effort in-process network guard, used only where no network namespace is available."""
    import socket

    def refuse(*args, **kwargs):
        raise OSError("network access is disabled in the sandbox")

    for name in ("socket", "create_connection", "create_server", "socketpair", "fromfd", "getaddrinfo"):
        setattr(socket, name, refuse)
    sys.modules["_socket"] = None  # a later `import _socket` fails


def worker_main(serve: bool, sockets: bool = True) -> None:
    """Run `program.py` of the working directory as `__main__`; with `serve`, then answer calls.

    Args:
        serve: answer the checker's calls after the program ran (checks given).
        sockets: False disables the socket module in-process (no network namespace available).
    """
    import builtins

    if not sockets:
        _disable_sockets()

    builtins.exit, builtins.quit = _Quitter("exit"), _Quitter("quit")
    work = os.getcwd()
    program = os.path.join(work, "program.py")
    with open(program, encoding="utf-8") as handle:
        source = handle.read()
    sys.argv = [program]
    sys.path.insert(0, work)
    # A module of its own as __main__ (pickle and `import __main__` find the program's globals there).
    main = type(sys)("__main__")
    main.__file__ = program
    sys.modules["__main__"] = main
    namespace = main.__dict__
    try:
        exec(compile(source, program, "exec"), namespace)
    except SystemExit as err:
        _flush()
        if err.code is not None and not isinstance(err.code, int):
            print(err.code, file=sys.stderr)
        _flush()
        os._exit(err.code if isinstance(err.code, int) else (0 if err.code is None else 1))
    except BaseException:  # noqa: BLE001 - the program's own error, shown in its stderr
        import traceback

        traceback.print_exc()
        _flush()
        os._exit(1)
    _flush()
    if not serve:
        os._exit(0)
    send(ANSWERS_FD, {"ready": True})
    while True:
        request = receive(REQUESTS_FD)
        if request is None:
            os._exit(0)
        name = str(request.get("call"))
        if name not in namespace:
            answer = {"error": "NameError", "message": f"name {name!r} is not defined by the program"}
            send(ANSWERS_FD, answer)
            continue
        try:
            value = namespace[name](*decode_plain(request["args"]), **decode_plain(request["kwargs"]))
            if request.get("project") == "not_none":
                value = value is not None
            answer = {"value": encode_plain(value)}
        except NotPlainData as err:
            answer = {"error": "NotPlainData", "message": f"{name}() returned {err}"}
        except BaseException as err:  # noqa: BLE001 - reported to the checks as an exception
            error = type(err).__name__ if isinstance(err, Exception) else "RuntimeError"
            answer = {"error": error, "message": f"{type(err).__name__}: {str(err)[:500]}"}
        _flush()
        try:
            send(ANSWERS_FD, answer)
        except (NotPlainData, ValueError) as err:  # too large, or an int beyond sys.get_int_max_str_digits()
            send(ANSWERS_FD, {"error": "NotPlainData", "message": f"{name}() returned {err}"})


if __name__ == "__main__":  # python -I -S -c <stub> <this module, compiled> run|serve [no-sockets]
    worker_main(serve="serve" in sys.argv[1:], sockets="no-sockets" not in sys.argv[1:])
