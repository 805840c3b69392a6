"""`equibench check` through bench.check_cli (add_parser + run, as bench/cli.py will wire them): exit codes,
the JSON schema, the HTML page, and nothing written on bad input."""

from __future__ import annotations

import argparse
import json
import re

import pytest

from bench import check_cli

REQUIRED = {"target", "input_shape", "dtype", "elements", "exact_group", "first_breaking_module", "modules",
            "causes", "angles", "lie_derivative"}


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="equibench")
    sub = parser.add_subparsers(dest="command", required=True)
    check_cli.add_parser(sub)
    return parser.parse_args(["check", *map(str, argv)])


def run(*argv: str) -> int:
    return check_cli.run(parse(*argv))


def test_plugin_factory_json_names_the_strided_break(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = run("check_models:iso_strided_net", "--input-shape", "1,10,10", "--angles", "0:90:45", "--sizes", "8:11",
             "--json", out)
    assert rc == 0
    d = json.loads(out.read_text())
    assert REQUIRED <= set(d) and "exact_sizes" in d
    assert d["target"] == "check_models:iso_strided_net" and d["input_shape"] == [1, 10, 10]
    assert d["dtype"] == "float64"
    assert [e["element"] for e in d["elements"]] == ["rot90", "rot180", "rot270", "flip_h", "flip_v", "transpose",
                                                     "antitranspose"]
    assert all(isinstance(e["error"], float) and isinstance(e["exact"], bool) for e in d["elements"])
    assert d["exact_group"] == "D1[transpose]" and d["first_breaking_module"] == "down"
    assert [m["name"] for m in d["modules"]][:2] == ["stem", "down"]
    assert all(set(m) >= {"name", "error"} for m in d["modules"])
    assert any(c["rule"] == "strided_sampling_not_centred" and c["module"] == "down" for c in d["causes"])
    assert [a["angle_deg"] for a in d["angles"]] == [0, 45, 90]
    assert all(set(a) >= {"angle_deg", "error", "floor"} for a in d["angles"])
    assert isinstance(d["lie_derivative"], float)
    assert d["exact_sizes"] == [9, 11]
    text = capsys.readouterr().out
    assert "exact group: D1[transpose]" in text and "first breaking module: down" in text


def test_registry_layer_with_default_shape_is_exact_and_has_no_break(tmp_path):
    out = tmp_path / "r.json"
    assert run("layer_gmr", "--angles", "none", "--json", out) == 0
    d = json.loads(out.read_text())
    assert d["input_shape"] == [16, 33, 33]
    assert d["exact_group"] == "D4" and d["first_breaking_module"] is None and d["causes"] == []
    assert d["angles"] == [] and d["lie_derivative"] is None and "exact_sizes" not in d
    assert d["contract_group"] == "D4-grid"


def test_module_instance_target_and_html(tmp_path):
    html = tmp_path / "r.html"
    assert run("check_models:PLAIN_INSTANCE", "--input-shape", "1,9,9", "--angles", "0:40:20", "--dtype",
               "float32", "--html", html) == 0
    page = html.read_text()
    assert page.startswith("<!DOCTYPE html>") and "check_models:PLAIN_INSTANCE" in page
    assert page.count("data:image/png;base64,") == 2  # module errors and angles
    assert "features.0" in page and "anisotropic_kernel" in page and "float32" in page


def test_default_input_shapes():
    assert check_cli.default_input_shape("cnn") == (1, 29, 29)
    assert check_cli.default_input_shape("layer_conv2d") == (16, 33, 33)
    assert check_cli.default_input_shape("c8_resnet18") == (3, 33, 33)
    assert check_cli.default_input_shape("gmr_resnet18") == (3, 32, 32)


@pytest.mark.parametrize("argv,message", [
    (["c88"], "Did you mean 'c8'"),
    (["check_models:iso_strided_net"], "--input-shape C,H,W is required"),
    (["check_models:nope", "--input-shape", "1,9,9"], "has no attribute"),
    (["check_models:broken_factory", "--input-shape", "1,9,9"], "this factory always fails"),
    (["check_models:not_a_module", "--input-shape", "1,9,9"], "not a torch.nn.Module"),
    (["check_models:PLAIN_INSTANCE", "--input-shape", "3,9,9"], "the model raised.*channels"),
    (["check_models:PLAIN_INSTANCE", "--input-shape", "1,9"], "three positive integers"),
    (["cnn", "--angles", "1:x"], "angles must be"),
    (["cnn", "--rotation", "cubic"], "unknown rotation method"),
    (["cnn", "--sizes", "9"], "sizes must be"),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, argv, message):
    out, html = tmp_path / "r.json", tmp_path / "r.html"
    assert run(*argv, "--json", out, "--html", html) == 2
    err = capsys.readouterr().err
    assert err.startswith("equibench: error:")
    assert re.search(message, err), err
    assert not out.exists() and not html.exists()


def test_missing_output_folder_is_bad_input(tmp_path, capsys):
    assert run("layer_gmr", "--json", tmp_path / "no" / "r.json") == 2
    assert "does not exist" in capsys.readouterr().err


def test_bad_dtype_is_an_argparse_error():
    with pytest.raises(SystemExit) as info:
        parse("cnn", "--dtype", "float16")
    assert info.value.code == 2
