"""The one YAML loader: alias bombs, deep nesting, huge and binary files end in exit 2, fast."""

from __future__ import annotations

import json
import time
import tracemalloc

import pytest
from typer.testing import CliRunner

from parc_surgery.batch import load_jobs
from parc_surgery.cli import app
from parc_surgery.errors import RulesError
from parc_surgery.rules import load_rules
from parc_surgery.rules.yaml_source import MAX_DEPTH, YAML_LIMIT_ENV, parse_yaml

runner = CliRunner()


def billion_laughs(levels: int = 9) -> str:
    """The 406-byte rules file of the report: 9 ** 9 strings once expanded."""
    lines = ["version: 1", 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    lines.append(f"rules: *a{levels - 1}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("load", [load_rules, load_jobs], ids=["rules", "jobs"])
def test_alias_bomb_is_refused_at_once_with_its_line(tmp_path, load):
    path = tmp_path / "bomb.yaml"
    path.write_text(billion_laughs())
    assert len(path.read_bytes()) < 500
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(RulesError, match=r"bomb.yaml:3:10: YAML aliases are not accepted") as info:
        load(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert time.perf_counter() - started < 10  # was 42 s and 4.25 GB
    assert peak < 20 << 20
    assert info.value.exit_code == 2 and len(info.value.message) < 400


def test_merge_keys_need_aliases_and_are_refused_too():
    with pytest.raises(RulesError, match="aliases are not accepted"):
        parse_yaml("base: &b {pe: true}\nother:\n  <<: *b\n", "m.yaml")


def test_anchors_without_aliases_are_harmless():
    data, _ = parse_yaml("a: &x 1\nb: 2\n", "a.yaml")
    assert data == {"a": 1, "b": 2}


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5000, 200_000])
def test_deep_nesting_is_exit_2_not_a_recursion_error(depth):
    text = "version: 1\nrules: " + "[" * depth + "]" * depth + "\n"
    with pytest.raises(RulesError) as info:
        parse_yaml(text, "deep.yaml")
    assert info.value.where.startswith("deep.yaml:2:")
    assert "nest" in info.value.what


def test_block_style_nesting_is_limited_too():
    text = "".join(f"{'  ' * i}k{i}:\n" for i in range(MAX_DEPTH + 2)) + "  " * 40 + "v: 1\n"
    with pytest.raises(RulesError, match=f"nested deeper than {MAX_DEPTH}"):
        parse_yaml(text, "deep.yaml")


def test_too_many_nodes_is_refused():
    with pytest.raises(RulesError, match="more than 100000 YAML nodes"):
        parse_yaml("[" + "0," * 100_001 + "0]", "wide.yaml")


@pytest.mark.parametrize("load", [load_rules, load_jobs], ids=["rules", "jobs"])
def test_binary_file_is_a_clear_exit_2(tmp_path, load):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe" * 10)
    with pytest.raises(RulesError, match=r"is not UTF-8 text \(byte 0x89 at offset 0\)") as info:
        load(path)
    assert str(path) in info.value.message and info.value.exit_code == 2


@pytest.mark.parametrize("load", [load_rules, load_jobs], ids=["rules", "jobs"])
def test_file_over_the_size_limit_is_refused_and_the_limit_can_be_raised(
    tmp_path, monkeypatch, load
):
    path = tmp_path / "big.yaml"
    path.write_text("# " + "x" * (1 << 20) + "\nversion: 1\nrules: []\njobs: []\n")
    with pytest.raises(RulesError, match=rf"more than the {1 << 20} a YAML file may have") as info:
        load(path)
    assert YAML_LIMIT_ENV in info.value.message
    monkeypatch.setenv(YAML_LIMIT_ENV, str(2 << 20))
    with pytest.raises(RulesError) as info:  # now read: fails on content, not size
        load(path)
    assert "a YAML file may have" not in info.value.message


def test_a_bad_size_limit_is_a_usage_error(monkeypatch):
    monkeypatch.setenv(YAML_LIMIT_ENV, "lots")
    with pytest.raises(Exception, match="is not a positive number of bytes") as info:
        parse_yaml("a: 1", "x")
    assert info.value.exit_code == 2


@pytest.mark.parametrize("load", [load_rules, load_jobs], ids=["rules", "jobs"])
def test_a_directory_is_named_as_such(tmp_path, load):
    with pytest.raises(RulesError, match="is a directory"):
        load(tmp_path) if load is load_jobs else load(str(tmp_path))


def test_huge_integer_and_bad_date_are_exit_2():
    for text in ("a: " + "9" * 5000, "a: 2020-99-99"):
        with pytest.raises(RulesError, match="cannot be read"):
            parse_yaml(text, "v.yaml")


def test_python_and_other_tags_are_refused():
    with pytest.raises(RulesError, match="YAML tag .*python/object/apply:os.system"):
        parse_yaml("a: !!python/object/apply:os.system ['true']", "t.yaml")
    with pytest.raises(RulesError, match="YAML syntax error"):
        parse_yaml("a: !!python/name:os.system ''", "t.yaml")
    with pytest.raises(RulesError, match="is not accepted"):
        parse_yaml("a: !!set {x, y}", "t.yaml")


def test_rules_validate_cli_reports_the_bomb_with_exit_2(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(billion_laughs())
    result = runner.invoke(app, ["rules", "validate", str(path)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {path}:3:10: YAML aliases are not accepted")
    assert "Traceback" not in result.output


def test_jobs_errors_point_at_file_line_and_column(tmp_path):
    path = tmp_path / "jobs.yaml"
    path.write_text(
        "defaults:\n  seed: many\njobs:\n  - {model: resnet26}\n  - model: resnet26\n"
        "    stagez: [4]\n"
    )
    first, second = load_jobs(path)
    assert isinstance(first, RulesError) and isinstance(second, RulesError)
    assert first.where == f"{path}:2:9" and "job 0: seed" in first.what  # from defaults
    assert f"{path}:6:5: unknown key 'stagez'" in second.what  # listed after the defaults'
    path.write_text("jobs:\n  - {model: resnet26}\n  - model: resnet26\n    stagez: [4]\n")
    ok, bad = load_jobs(path)
    assert not isinstance(ok, RulesError)
    assert bad.where == f"{path}:4:5" and bad.what.startswith("job 1: unknown key 'stagez'")


def test_jobs_model_args_follow_the_model_argument_policy(tmp_path):
    path = tmp_path / "jobs.yaml"
    path.write_text("jobs:\n  - model: resnet26\n    model_args: {checkpoint_path: /etc/passwd}\n")
    (error,) = load_jobs(path)
    assert isinstance(error, RulesError) and error.where == f"{path}:3:17"
    assert "checkpoint_path: not allowed" in error.what


def test_batch_with_a_binary_jobs_file_is_exit_2_not_a_traceback(tmp_path):
    path = tmp_path / "jobs.yaml"
    path.write_bytes(bytes(range(256)))
    result = runner.invoke(app, ["batch", str(path), "--format", "json"])
    assert result.exit_code == 2 and "not UTF-8 text" in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert json.loads(result.stdout or "null") is None


def test_model_arg_values_go_through_the_same_loader():
    result = runner.invoke(
        app, ["convert", "resnet26", "--dry-run", "--model-arg", "x=[&a [1], *a]"]
    )
    assert result.exit_code == 2 and "aliases are not accepted" in result.stderr


def test_jobs_sizes_and_seeds_are_bounded_where_they_are_written(tmp_path):
    path = tmp_path / "jobs.yaml"
    path.write_text(
        "jobs:\n  - {model: resnet26, input_size: 100000}\n"
        "  - {model: resnet26, input_size: [64, -1]}\n"
        "  - {model: resnet26, seed: 100000000000000000000}\n"
    )
    huge, negative, seed = load_jobs(path)
    assert huge.where == f"{path}:2:35" and "larger than 4096" in huge.what
    assert negative.where == f"{path}:3:35" and "input_size" in negative.what
    assert seed.where == f"{path}:4:29" and "seed" in seed.what
