"""A local test server for TF Serving's REST API, from an exported SavedModel alone.

``keras-dkd serve EXPORT_DIR`` answers what a client of TF Serving sends, so that a client can be
written and checked without Docker or a TF Serving binary:

- ``POST /v1/models/NAME[/versions/N]:predict`` with a JSON body in either of TF Serving's forms:

  - row form: ``{"signature_name": ..., "instances": [row, ...]}`` -> ``{"predictions": [...]}``.
    A row is the value of the signature's one input, or an object naming every input; rows are
    stacked along a new first axis, and every output must have that batch axis;
  - columnar form: ``{"signature_name": ..., "inputs": value-or-object}`` ->
    ``{"outputs": value-or-object}``: values are passed as they are (any shape the signature
    takes, e.g. ``classify_waveform``'s one unbatched waveform).

  Binary strings are sent as ``{"b64": "..."}`` (the WAV files of ``classify_wav``); string
  outputs come back as text. ``signature_name`` defaults to ``serving_default``.
- ``GET /v1/models/NAME[/versions/N]``: the version status; ``GET .../metadata``: the
  signatures' inputs and outputs (dtype and shape).

A malformed request (not JSON, an unknown signature or input, a value of the wrong shape or
type, a file the graph refuses) gets status 400 and ``{"error": "..."}``; an unknown model or
version 404. The model name defaults to EXPORT_DIR's folder name and the latest version is
served, as TF Serving does with its default version policy.

This is a test server: one Python process, no batching, no TLS, no authentication, and it
listens on 127.0.0.1 unless told otherwise. Serve production traffic with TF Serving itself
(``tensorflow/serving``), which reads the same EXPORT_DIR.

Example:
    >>> server = make_server("exports/emotion", port=0)     # doctest: +SKIP
    >>> threading.Thread(target=server.serve_forever).start()   # doctest: +SKIP
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from keras_dkd.errors import UserError

__all__ = ["RequestError", "ServedModel", "make_server"]

DEFAULT_PORT = 8501
_ROUTE = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?"
    r"(?:(?P<metadata>/metadata)|:(?P<verb>[a-z]+))?/?$"
)
_MAX_BODY = 512 * 1024 * 1024  # refused above this: a test server holds the body in memory


class RequestError(Exception):
    """A request the server refuses: ``status`` (400 or 404) and a one-line message."""

    def __init__(self, message: str, status: int = HTTPStatus.BAD_REQUEST):
        super().__init__(message)
        self.status = int(status)


def _assertion_text(message: str) -> str:
    """The readable part of a TensorFlow error: an assertion's own text when there is one."""
    found = re.search(r"assertion failed: \[(.*?)\]", message, re.S)
    if found:
        return found.group(1).strip()
    found = re.search(r"Summarized data: b'(.*?)'", message, re.S)
    if found:
        return found.group(1)
    return message.strip().splitlines()[0]


def _decode_b64(value):
    """Replace every ``{"b64": "..."}`` in a JSON value by the bytes it encodes."""
    if isinstance(value, dict):
        if set(value) == {"b64"}:
            try:
                return base64.b64decode(value["b64"], validate=True)
            except (binascii.Error, TypeError, ValueError):
                raise RequestError("a {\"b64\": ...} value is not valid base64") from None
        return {k: _decode_b64(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_b64(v) for v in value]
    return value


def _to_json(array: np.ndarray):
    """A NumPy output as JSON: numbers as they are, strings as text (or ``{"b64"}``)."""
    if array.dtype.kind in "OSU":
        def text(x):
            if isinstance(x, bytes):
                try:
                    return x.decode("utf-8")
                except UnicodeDecodeError:
                    return {"b64": base64.b64encode(x).decode("ascii")}
            return str(x)

        flat = [text(x) for x in array.reshape(-1).tolist()]
        return np.array(flat, dtype=object).reshape(array.shape).tolist() if array.ndim else flat[0]
    if array.dtype == np.float32:  # the shortest decimal that reads back as the same float32
        flat = [float(str(x)) for x in array.reshape(-1)]
        return np.array(flat, dtype=object).reshape(array.shape).tolist() if array.ndim else flat[0]
    return array.tolist()


class ServedModel:
    """The latest version of a SavedModel base path (or one version directory), loaded.

    Args:
        export_dir: a model base path holding numbered versions (``exports/emotion``), or one
            version directory (``exports/emotion/3``).
        name: the model name in URLs; defaults to the base path's folder name.

    Raises:
        UserError: no SavedModel is found there, or TensorFlow is missing.
    """

    def __init__(self, export_dir, name: str | None = None):
        from keras_dkd.export import list_versions

        export_dir = Path(export_dir)
        if (export_dir / "saved_model.pb").is_file() and export_dir.name.isdigit():
            self.path, base = export_dir, export_dir.parent
        else:
            versions = list_versions(export_dir)
            if not export_dir.is_dir():
                raise UserError(f"{export_dir}: no such folder; pass a model base path "
                                "written by `keras-dkd export` (e.g. exports/emotion)")
            if not versions:
                raise UserError(f"{export_dir} holds no numbered version folder; export one "
                                f"with `keras-dkd export MODEL {export_dir}`")
            self.path, base = export_dir / str(versions[-1]), export_dir
        if not (self.path / "saved_model.pb").is_file():
            raise UserError(f"{self.path} holds no saved_model.pb; export the model again")
        self.version = int(self.path.name)
        self.name = name or base.absolute().name
        try:
            import tensorflow as tf
        except ImportError:
            raise UserError("keras-dkd serve needs TensorFlow: pip install tensorflow") from None
        self._tf = tf
        self._loaded = tf.saved_model.load(str(self.path))
        self.signatures = {k: v for k, v in self._loaded.signatures.items()
                           if not k.startswith("__")}

    # -- description --------------------------------------------------------------------------

    def _inputs(self, name):
        return self.signatures[name].structured_input_signature[1]

    def _outputs(self, name):
        return self.signatures[name].structured_outputs

    def status(self) -> dict:
        return {"model_version_status": [{
            "version": str(self.version), "state": "AVAILABLE",
            "status": {"error_code": "OK", "error_message": ""},
        }]}

    def metadata(self) -> dict:
        def describe(specs):
            return {k: {"dtype": spec.dtype.name, "shape": [-1 if d is None else d
                                                            for d in spec.shape.as_list()]}
                    for k, spec in specs.items()}

        return {
            "model_spec": {"name": self.name, "version": str(self.version)},
            "metadata": {"signature_def": {"signature_def": {
                name: {"inputs": describe(self._inputs(name)),
                       "outputs": describe(self._outputs(name))}
                for name in sorted(self.signatures)
            }}},
        }

    # -- prediction ---------------------------------------------------------------------------

    def predict(self, body: dict) -> dict:
        """Answer one ``:predict`` request body (already parsed JSON).

        Raises:
            RequestError: the request is malformed or the graph refuses its values.
        """
        if not isinstance(body, dict):
            raise RequestError("the request body must be a JSON object")
        signature = body.get("signature_name", "serving_default")
        if signature not in self.signatures:
            raise RequestError(
                f"signature_name {signature!r} is not in the model; it has "
                + ", ".join(sorted(self.signatures))
            )
        forms = [k for k in ("instances", "inputs") if k in body]
        if len(forms) != 1:
            raise RequestError('give exactly one of "instances" (row form) and "inputs" '
                               "(columnar form)")
        unknown = sorted(set(body) - {"signature_name", "instances", "inputs"})
        if unknown:
            raise RequestError(f"unknown request fields: {', '.join(unknown)}")
        specs = self._inputs(signature)
        names = sorted(specs)
        if forms[0] == "instances":
            values, batch = self._rows(_decode_b64(body["instances"]), names)
        else:
            given = _decode_b64(body["inputs"])
            if len(names) == 1 and not (isinstance(given, dict) and set(given) == set(names)):
                given = {names[0]: given}
            if not isinstance(given, dict) or set(given) != set(names):
                raise RequestError(f"signature {signature!r} takes inputs {', '.join(names)}; "
                                   'give "inputs" as an object with those keys')
            values, batch = given, None
        tensors = {k: self._tensor(k, v, specs[k], signature) for k, v in values.items()}
        tf = self._tf
        try:
            outputs = self.signatures[signature](**tensors)
        except (tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError) as error:
            raise RequestError(_assertion_text(error.message)) from None
        outputs = {k: np.asarray(v.numpy()) for k, v in outputs.items()}
        if batch is None:
            if len(outputs) == 1:
                return {"outputs": _to_json(next(iter(outputs.values())))}
            return {"outputs": {k: _to_json(v) for k, v in sorted(outputs.items())}}
        unbatched = sorted(k for k, v in outputs.items() if v.ndim == 0 or v.shape[0] != batch)
        if unbatched:
            raise RequestError(
                f"signature {signature!r} gives outputs without a batch axis "
                f"({', '.join(unbatched)}); send its input in the columnar \"inputs\" form"
            )
        columns = {k: _to_json(v) for k, v in outputs.items()}
        if len(columns) == 1:
            return {"predictions": next(iter(columns.values()))}
        return {"predictions": [{k: columns[k][i] for k in sorted(columns)}
                                for i in range(batch)]}

    @staticmethod
    def _rows(instances, names):
        if not isinstance(instances, list) or not instances:
            raise RequestError('"instances" must be a non-empty list of rows')
        if len(names) == 1:
            rows = [row[names[0]] if isinstance(row, dict) and set(row) == set(names) else row
                    for row in instances]
            return {names[0]: rows}, len(rows)
        for i, row in enumerate(instances):
            if not isinstance(row, dict) or set(row) != set(names):
                raise RequestError(f"instance {i} must be an object with the keys "
                                   f"{', '.join(names)}")
        return {k: [row[k] for row in instances] for k in names}, len(instances)

    def _tensor(self, name, value, spec, signature):
        tf = self._tf
        try:
            if spec.dtype == tf.string:
                array = np.array(value, dtype=object)
                if array.size and not all(isinstance(x, (bytes, str)) for x in array.flat):
                    raise ValueError("not strings")
                array = np.vectorize(lambda x: x.encode() if isinstance(x, str) else x,
                                     otypes=[object])(array) if array.size else array
            else:
                array = np.asarray(value, dtype=spec.dtype.as_numpy_dtype)
        except (TypeError, ValueError):
            raise RequestError(
                f"input {name!r} of {signature!r} must be {spec.dtype.name} values of shape "
                f"{_shape(spec)}"
            ) from None
        if not spec.shape.is_compatible_with(array.shape):
            raise RequestError(
                f"input {name!r} of {signature!r} has shape {list(array.shape)}; the signature "
                f"takes {_shape(spec)} (-1: any size)"
            )
        return tf.constant(array, dtype=spec.dtype)


def _shape(spec) -> list:
    return [-1 if d is None else d for d in spec.shape.as_list()]


class _Handler(BaseHTTPRequestHandler):
    server_version = "keras-dkd-serve"
    protocol_version = "HTTP/1.1"
    model: ServedModel  # set on the subclass made by make_server
    quiet = False

    def log_message(self, fmt, *args):
        if not self.quiet:
            super().log_message(fmt, *args)

    def _send(self, status: int, payload: dict) -> None:
        data = (json.dumps(payload) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status >= 400:  # the body may be unread: do not reuse the connection
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def _route(self):
        match = _ROUTE.match(self.path.split("?", 1)[0])
        if not match:
            raise RequestError(f"no such endpoint {self.path}; use /v1/models/"
                               f"{self.model.name}:predict", HTTPStatus.NOT_FOUND)
        if match["name"] != self.model.name:
            raise RequestError(f"Servable not found for request: Latest({match['name']}); "
                               f"this server serves {self.model.name!r}", HTTPStatus.NOT_FOUND)
        if match["version"] is not None and int(match["version"]) != self.model.version:
            raise RequestError(
                f"Servable not found for request: Specific({match['name']}, "
                f"{match['version']}); version {self.model.version} is served",
                HTTPStatus.NOT_FOUND,
            )
        return match

    def _handle(self, method: str) -> None:
        try:
            match = self._route()
            if method == "GET":
                if match["verb"]:
                    raise RequestError(f":{match['verb']} takes a POST request")
                self._send(200, self.model.metadata() if match["metadata"]
                           else self.model.status())
                return
            if match["verb"] != "predict":
                raise RequestError(
                    f"this test server answers :predict only (got "
                    f"{':' + match['verb'] if match['verb'] else 'no verb'})"
                )
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = 0
            if length <= 0:
                raise RequestError("send a JSON body (with a Content-Length header)")
            if length > _MAX_BODY:
                raise RequestError(f"the body is {length} bytes; this test server takes at most "
                                   f"{_MAX_BODY} (split the request)")
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                raise RequestError(f"the body is not valid JSON ({error})") from None
            self._send(200, self.model.predict(body))
        except RequestError as error:
            self._send(error.status, {"error": str(error)})
        except Exception as error:  # noqa: BLE001 - a server answers, it does not die
            self._send(500, {"error": f"{type(error).__name__}: {error}"})

    def do_GET(self):  # noqa: N802 - http.server's naming
        self._handle("GET")

    def do_POST(self):  # noqa: N802
        self._handle("POST")


def make_server(export_dir, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                model_name: str | None = None, quiet: bool = False) -> ThreadingHTTPServer:
    """Load the latest version under ``export_dir`` and bind a server to ``host:port``.

    Args:
        export_dir: the model base path (or one version folder).
        host: the address to listen on (127.0.0.1: this machine only).
        port: the port; 0 picks a free one (``server.server_address[1]`` tells which).
        model_name: the name in URLs; defaults to ``export_dir``'s folder name.
        quiet: do not log each request to stderr.

    Returns:
        The server; call ``serve_forever()`` (and ``shutdown()`` from another thread).

    Raises:
        UserError: nothing servable under ``export_dir``, or the port cannot be bound.
    """
    model = ServedModel(export_dir, model_name)
    handler = type("Handler", (_Handler,), {"model": model, "quiet": quiet})
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as error:
        raise UserError(f"cannot listen on {host}:{port} ({error.strerror}); pass another "
                        "--port") from None
    server.model = model
    return server
