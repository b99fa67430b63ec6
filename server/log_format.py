"""How log lines look: text for people (the default) or one JSON object a line for log
shippers (`--log-format json`). Either way a line logged inside a trace carries its trace id,
so a fill can be followed from the relay's span to the store in the logs too."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from opentelemetry import trace

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s%(trace_suffix)s"


class TraceIds(logging.Filter):
    """Adds the current span's trace and span ids to every record (empty outside a trace)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        trace_id = format(context.trace_id, "032x") if context.is_valid else ""
        record.__dict__.update(
            trace_id=trace_id,
            span_id=format(context.span_id, "016x") if context.is_valid else "",
            trace_suffix=f" [trace {trace_id}]" if trace_id else "",
        )
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, the trace ids
    when there are some, and the exception's text when there is one. A helper process (the
    views writer) names itself in `process`: its lines share the service's stderr."""

    def __init__(self, process: str = "") -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.process:
            line["process"] = self.process
        for name in ("trace_id", "span_id"):
            value = getattr(record, name, "")
            if value:
                line[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False)


def configure_logging(
    level: str, log_format: str, *, force: bool = False, process: str = ""
) -> None:
    """The root logger's handler: text or JSON, with trace ids. Like logging.basicConfig,
    it leaves a root logger that has handlers already as it is (a host such as pytest's log
    capture), unless `force`. `process` names a helper process of the service in each line
    (text: `logger [process]: message`)."""
    root = logging.getLogger()
    if root.handlers and not force:
        return
    handler = logging.StreamHandler()
    handler.addFilter(TraceIds())
    text = TEXT_FORMAT.replace("%(name)s:", f"%(name)s [{process}]:") if process else TEXT_FORMAT
    handler.setFormatter(
        JsonFormatter(process) if log_format == "json" else logging.Formatter(text)
    )
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
