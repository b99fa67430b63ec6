"""The TOML configuration file: the example in the repository is valid, a setting comes from
the file, then its PORTFOLIO_* variable, then its flag; every kind of bad file stops the start
naming the file, the key and why; --print-config shows every setting with secrets masked."""

from __future__ import annotations

import re
from dataclasses import fields
from decimal import Decimal
from pathlib import Path

import pytest

from server.config import ServiceConfig, parse_args
from server.config_file import GROUP_OF, mask_secrets

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "portfolio.toml"
    path.write_text(text)
    return str(path)


def test_the_example_file_is_valid_and_says_what_it_says():
    config = parse_args(["--config", str(ROOT / "portfolio.example.toml")])
    assert config == ServiceConfig()  # it spells out defaults


def test_every_configuration_shown_in_the_docs_is_valid(tmp_path):
    """A reader copies the docs' TOML: each block must start the service as it says."""
    blocks = [
        found.group(1)
        for page in sorted((ROOT / "docs").glob("*.md"))
        for found in re.finditer(r"^```toml\n(.*?)^```$", page.read_text(), re.M | re.S)
    ]
    assert blocks, "the configuration section shows an example"
    for block in blocks:
        config = parse_args(["--config", write(tmp_path, block)])
        assert config != ServiceConfig()


def test_every_setting_has_its_group():
    assert {field.name for field in fields(ServiceConfig)} == set(GROUP_OF)


def test_the_file_then_the_environment_then_the_flag(tmp_path, monkeypatch):
    path = write(tmp_path, "[service]\nport = 6000\n[storage]\ncheckpoint_every = 5\n")
    config = parse_args(["--config", path])
    assert (config.port, config.checkpoint_every) == (6000, 5)
    monkeypatch.setenv("PORTFOLIO_PORT", "7000")
    assert parse_args(["--config", path]).port == 7000
    assert parse_args(["--config", path, "--port", "8000"]).port == 8000
    monkeypatch.setenv("PORTFOLIO_CONFIG", path)
    assert parse_args([]).checkpoint_every == 5


def test_values_are_parsed_as_their_flags_parse_them(tmp_path):
    path = write(tmp_path, '[service]\nprecision = "1e-6"\nstrict_instruments = true\n')
    config = parse_args(["--config", path])
    assert config.precision == Decimal("1e-6") and config.strict_instruments is True


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[servce]\nport = 1\n", "[servce] is not a group"),
        ("[service]\nprot = 1\n", "[service] prot: not a setting"),
        ("[service]\nstore = 'mem://'\n", "[service] store: belongs in [storage]"),
        ("[service]\nport = 'x'\n", "[service] port: "),
        ("[service]\nprecision = '0.3'\n", "[service] precision: '0.3' must be a power of ten"),
        ("[risk]\nsession_days = 'weekdays'\n", "[risk] session_days: "),
        ("[service]\nport = [1]\n", "must be a string, a number or a boolean"),
        ("service = 1\n", "service must be a table"),
        ("[service\n", "not TOML"),
    ],
)
def test_a_bad_file_stops_the_start_naming_file_key_and_why(tmp_path, capsys, text, says):
    path = write(tmp_path, text)
    with pytest.raises(SystemExit) as stopped:
        parse_args(["--config", path])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert path in err and says in err


def test_a_missing_file_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--config", str(tmp_path / "nope.toml")])
    assert "nope.toml: cannot be read" in capsys.readouterr().err


def test_print_config_shows_every_setting_with_secrets_masked(capsys):
    uri = "s3://127.0.0.1:bucket?port=9000&access=AKIA123&secret=s3cr3t"
    with pytest.raises(SystemExit) as stopped:
        parse_args(["--store", uri, "--print-config"])
    assert stopped.value.code == 0
    out = capsys.readouterr().out
    assert "s3cr3t" not in out and "AKIA123" not in out
    assert 'store = "s3://127.0.0.1:bucket?port=9000&access=***&secret=***"' in out
    assert "[reconciliation]" in out and "port = 50051" in out


def test_masking_leaves_the_rest():
    assert mask_secrets("lmdb://data") == "lmdb://data"
    assert (
        mask_secrets("x?aws_secret_access_key=k&region=eu")
        == "x?aws_secret_access_key=***&region=eu"
    )
