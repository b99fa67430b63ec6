"""The report's HTML page: the pictures beside the tables of exact figures.

Every value cell carries an id (`risk-var95`, `strategy-S1`, ...) so a program, or a test, can
read the figures back without parsing the layout.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from reports.model import Report, canonical

STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1000px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; }
td.n { text-align: right; font-family: monospace; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
p.note { color: #555; font-size: 0.9em; }
"""


def _cell(key: str, value: str) -> str:
    return f'<td class="n" id="{escape(key)}">{escape(value)}</td>'


def _risk(report: Report) -> str:
    rows = "".join(
        f"<tr><th>{escape(label)}</th>{_cell(f'risk-{key}', value)}</tr>"
        for key, label, value in report.risk
    )
    return f"<table>{rows}</table>"


def _strategies(report: Report) -> str:
    if not report.strategies:
        return "<p>No strategy has a closed trading day in these dates.</p>"
    rows = "".join(
        f"<tr><td>{escape(line.strategy_id)}</td>"
        f"{_cell(f'strategy-{line.strategy_id}', canonical(line.net_pnl))}"
        f"{_cell(f'share-{line.strategy_id}', share)}<td class='n'>{line.days}</td></tr>"
        for line, share in zip(report.strategies, report.shares(), strict=True)
    )
    head = (
        f"<tr><th>strategy</th><th>net P&amp;L ({escape(report.base_currency)})</th>"
        "<th>share %</th><th>days</th></tr>"
    )
    return f"<table>{head}{rows}</table>"


def _exposures(report: Report) -> str:
    parts = []
    for index, (title, lines) in enumerate(report.exposures):
        head = "<tr><th></th><th>long</th><th>short</th><th>gross</th><th>net</th></tr>"
        rows = "".join(
            f"<tr><td>{escape(line.name)}</td>"
            + "".join(
                _cell(f"exposure{index}-{line.name}-{kind}", getattr(line, kind))
                for kind in ("long", "short", "gross", "net")
            )
            + "</tr>"
            for line in lines
        )
        parts.append(f"<h3>{escape(title)}</h3><table>{head}{rows}</table>")
    return "".join(parts)


def write(report: Report, pictures: dict[str, Path], path: Path) -> None:
    window = f"{report.from_date or 'first close'} to {report.to_date or 'latest close'}"
    image = {name: escape(picture.name) for name, picture in pictures.items()}
    notes = "".join(f'<p class="note">{escape(note)}</p>' for note in report.notes)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>P&amp;L report {escape(report.account_id)}</title><style>{STYLE}</style></head>
<body>
<h1>P&amp;L report: account {escape(report.account_id)}</h1>
<p>Source: {escape(report.source)}. Trading days: {escape(window)}.
Base currency: <span id="base-currency">{escape(report.base_currency)}</span>.
Amounts are exact decimals in base currency unless a table says otherwise; ratios are
floating-point estimates.</p>
{notes}
<h2>Equity curve</h2><img src="{image["equity"]}" alt="cumulative net P&amp;L">
<h2>Daily net P&amp;L</h2><img src="{image["daily"]}" alt="daily net P&amp;L">
<h2>Risk</h2>{_risk(report)}
<h2>Attribution per strategy</h2>
<p>Each strategy's daily net P&amp;L summed over these days, and its share of the strategies'
sum (which may differ from the account-level book's total: a strategy's average cost is its
own).</p>
<img src="{image["attribution"]}" alt="net P&amp;L per strategy">{_strategies(report)}
<h2>Exposure, {escape(report.exposure_as_of)}</h2>
<img src="{image["exposure"]}" alt="exposure">{_exposures(report)}
</body></html>
"""
    path.write_text(page, encoding="utf-8")
