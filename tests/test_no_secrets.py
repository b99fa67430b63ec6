"""No credential of the store URI in any log line: not at start, not in a store's error, not
in a traceback that quotes it."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

import pytest

from server.app import SecretsMasked, main
from tests.storage.test_restart import s3_endpoint, s3_store  # noqa: F401  (fixtures)

ACCESS, SECRET = "AKIAO1EXAMPLEKEY", "wJalrXUtnFEMI-o1-secret"


def _with_credentials(uri: str) -> str:
    return uri.replace("access=test&secret=test", f"access={ACCESS}&secret={SECRET}")


def _assert_no_secret(text: str) -> None:
    assert SECRET not in text and ACCESS not in text, text


def _sigterm_when_listening(caplog: pytest.LogCaptureFixture) -> None:
    deadline = time.monotonic() + 60
    while not any("listening on" in r.getMessage() for r in caplog.records):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGTERM)


def test_the_start_line_names_the_store_without_its_credentials(s3_store, caplog, capfd):  # noqa: F811
    caplog.set_level(logging.INFO)
    stopper = threading.Thread(target=_sigterm_when_listening, args=(caplog,), daemon=True)
    stopper.start()
    assert main(["--store", _with_credentials(s3_store), "--port", "0", "--log-level", "info"]) == 0
    stopper.join(5)
    (line,) = [r.getMessage() for r in caplog.records if "listening on" in r.getMessage()]
    assert "access=***" in line and "secret=***" in line
    _assert_no_secret(caplog.text)
    _assert_no_secret(capfd.readouterr().err)


def test_a_store_error_names_the_store_without_its_credentials(s3_endpoint, caplog, capfd):  # noqa: F811
    uri = f"s3://127.0.0.1:no-such-bucket?port={s3_endpoint}&access={ACCESS}&secret={SECRET}"
    assert main(["--store", uri, "--port", "0"]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("cannot open store" in message for message in errors), errors
    _assert_no_secret(caplog.text)
    _assert_no_secret(capfd.readouterr().err)


def test_a_traceback_quoting_credentials_is_masked():
    record = logging.LogRecord("portfolio", logging.ERROR, __file__, 1, "failed: %s", ("x",), None)
    try:
        raise RuntimeError(f"s3://host:bucket?access={ACCESS}&secret={SECRET}&aws_auth=default")
    except RuntimeError:
        record.exc_info = sys.exc_info()
    record.msg, record.args = f"store s3://h:b?password=hunter2&secret={SECRET}", None
    assert SecretsMasked().filter(record)
    formatted = logging.Formatter().format(record)
    _assert_no_secret(formatted)
    assert "hunter2" not in formatted and "secret=***" in formatted
