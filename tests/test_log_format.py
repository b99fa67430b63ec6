"""Log lines as text or JSON, each carrying the trace id when logged inside a trace."""

from __future__ import annotations

import json
import logging

import pytest
from opentelemetry.sdk.trace import TracerProvider

from server.log_format import configure_logging


@pytest.fixture(autouse=True)
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_the_trace_id(capsys):
    configure_logging("INFO", "json", force=True)
    tracer = TracerProvider().get_tracer("test")
    log = logging.getLogger("portfolio.test")
    with tracer.start_as_current_span("ingest batch") as span:
        log.info("booked %d fills", 3)
    log.warning("outside")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    inside, outside = lines
    assert inside["message"] == "booked 3 fills" and inside["level"] == "INFO"
    assert inside["logger"] == "portfolio.test"
    assert inside["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert "trace_id" not in outside and outside["level"] == "WARNING"
    assert inside["time"].endswith("+00:00")


def test_text_lines_name_the_trace(capsys):
    configure_logging("INFO", "text", force=True)
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("group commit") as span:
        logging.getLogger("portfolio.test").info("committed")
    line = capsys.readouterr().err.strip()
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert line.endswith(f"portfolio.test: committed [trace {trace_id}]")


def test_an_exception_is_one_json_line(capsys):
    configure_logging("INFO", "json", force=True)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("portfolio.test").exception("failed")
    (line,) = capsys.readouterr().err.splitlines()
    assert "ValueError: boom" in json.loads(line)["exception"]


def test_the_service_logs_json_lines(tmp_path):
    import signal

    from tests.service_process import start_service

    process, address = start_service("--store", f"lmdb://{tmp_path}/store", "--log-format", "json")
    try:
        assert address.startswith("127.0.0.1:")
    finally:
        process.send_signal(signal.SIGTERM)
        rest = process.communicate(timeout=30)[1]
    lines = [json.loads(line) for line in rest.splitlines() if line.startswith("{")]
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    assert any("stopped at sequence" in line["message"] for line in lines)
