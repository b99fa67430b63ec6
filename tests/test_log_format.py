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


def test_the_service_and_its_views_writer_log_json_lines(tmp_path):
    """Every line of a JSON service's stderr reads as JSON, the views writer's too (a process
    of its own on the same stderr, which once logged text whatever the format)."""
    import signal
    import subprocess
    import sys
    import threading

    from tests.service_process import ENV, ROOT

    process = subprocess.Popen(
        [sys.executable, "-m", "server", "--port", "0", "--store", f"lmdb://{tmp_path}/store",
         "--log-format", "json", "--views-process", "true"],
        cwd=ROOT, env=ENV, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    watchdog = threading.Timer(60, process.kill)  # a service that never says both: no hang
    watchdog.start()
    raw: list[str] = []
    try:
        assert process.stderr is not None
        for line in process.stderr:  # until it listens and its writer has opened the views
            raw.append(line)
            text = "".join(raw)
            if "listening on 127.0.0.1:" in text and "the views are open" in text:
                break
    finally:
        process.send_signal(signal.SIGTERM)
        raw.extend(process.communicate(timeout=30)[1].splitlines())
        watchdog.cancel()
    lines = [json.loads(line) for line in raw if line.strip()]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    assert any("stopped at sequence" in line["message"] for line in lines)
    writer = [line for line in lines if line.get("process") == "views writer"]
    assert writer and writer[0]["level"] == "INFO"
    assert "the views are open" in writer[0]["message"]


def test_a_helper_process_is_named_in_text_lines(capsys):
    configure_logging("INFO", "text", force=True, process="views writer")
    logging.getLogger("portfolio.views").info("open")
    assert capsys.readouterr().err.strip().endswith("portfolio.views [views writer]: open")
