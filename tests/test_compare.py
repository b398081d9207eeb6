"""`psiloscope compare` on small stores: its numbers equal the library's, the report renders, bad input fails
with one line."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from activations import Store, StoreWriter, hook_name
from psiloscope.cka import linear_cka
from psiloscope.cli import cli
from psiloscope.compare import compare
from trainer.errors import run_cli

N_LAYERS, WIDTH, N_HEADS = 4, 16, 2


def write_store(path, seed_tokens: int, transform, n_seq: int = 24, seq_len: int = 40):
    """Layer l of model A is a random linear readout of a shared latent; `transform(l, X)` makes model B."""
    rng = np.random.default_rng(0)
    tok_rng = np.random.default_rng(seed_tokens)
    noise_rng = np.random.default_rng(99)  # separate, so B's noise does not shift A's latents
    hooks = {hook_name(l, k): WIDTH for l in range(N_LAYERS) for k in ("resid_post", "attn_z")}
    heads = {hook_name(l, "attn_z"): {"n_heads": N_HEADS, "head_dim": WIDTH // N_HEADS} for l in range(N_LAYERS)}
    maps = [rng.normal(size=(8, WIDTH)) for _ in range(N_LAYERS)]
    with StoreWriter(path, hooks, dtype="float32", hook_attrs=heads, attrs={"model_fingerprint": "m"}) as w:
        for _ in range(n_seq):
            tokens = tok_rng.integers(0, 12, seq_len)
            latent = rng.normal(size=(seq_len, 8)) + np.eye(12, 8)[tokens] * 3
            acts = {}
            for l in range(N_LAYERS):
                X = transform(l, latent @ maps[l], noise_rng)
                acts[hook_name(l, "resid_post")] = X
                acts[hook_name(l, "attn_z")] = X[:, ::-1].copy()
            w.append(tokens, acts)
    return path


def same(l, X, rng):
    return X


def diverging(l, X, rng):
    return X if l < 2 else X + rng.normal(scale=3.0, size=X.shape)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    d = tmp_path_factory.mktemp("stores")
    return write_store(d / "a.h5", 1, same), write_store(d / "b.h5", 1, diverging), write_store(d / "c.h5", 2, same)


OPTS = dict(n_boot=200, subsample_rows=400, probe_max_rows=800, progress=False)


def test_compare_numbers_equal_the_library(stores, tmp_path):
    a, b, _ = stores
    result = compare(str(a), str(b), **OPTS)
    res = result.results
    with Store(a) as sa, Store(b) as sb:
        for row in res["layers"]:
            if row["measure"] == "linear_cka":
                expected = linear_cka(sa.read(row["hook"]), sb.read(row["hook"]))
                assert row["value"] == pytest.approx(expected, rel=1e-9)
                assert row["ci_low"] <= row["value"] <= row["ci_high"]
    cka = {r["layer"]: r["value"] for r in res["layers"]
           if r["measure"] == "linear_cka" and r["hook"].endswith("resid_post")}
    assert cka[0] == pytest.approx(1.0) and cka[3] < 0.9
    assert res["novelty"]["windows"] and res["novelty"]["windows"][0]["start"] == 2
    heads = [(r["layer"], r["head"]) for r in res["heads"]]
    assert sorted(heads) == [(l, h) for l in range(N_LAYERS) for h in range(N_HEADS)]
    assert {p["task"] for p in res["probes"]} == {"current", "prev1", "prev3"}
    assert len(res["matrices"]["A_vs_B"]["values"]) == N_LAYERS
    assert res["meta"]["tokens"]["n_tokens"] == 24 * 40 and len(res["headline"]) >= 2

    html = result.to_html(tmp_path / "r.html")
    saved = json.loads(result.to_json(tmp_path / "r.json"))
    assert saved["layers"] == json.loads(json.dumps(res["layers"]))
    assert html.read_text().count("vega-embed") > 0


def test_cli_compare_and_rerender(stores, tmp_path):
    a, b, _ = stores
    out = tmp_path / "report.html"
    r = CliRunner().invoke(cli, ["compare", str(a), str(b), "-o", str(out), "--n-boot", "100", "--no-probes"])
    assert r.exit_code == 0, r.output
    assert "lowest linear CKA" in r.output and out.is_file() and out.with_suffix(".json").is_file()
    again = tmp_path / "again.html"
    r = CliRunner().invoke(cli, ["report", str(out.with_suffix(".json")), "-o", str(again)])
    assert r.exit_code == 0, r.output
    assert again.read_text() == out.read_text()


def run_main(argv, capsys):
    old = sys.argv
    sys.argv = ["psiloscope", *argv]
    try:
        with pytest.raises(SystemExit) as info:
            run_cli(cli)
    finally:
        sys.argv = old
    err = capsys.readouterr().err.strip().splitlines()
    return info.value.code, err


@pytest.mark.parametrize("case", ["tokens_differ", "unknown_path", "bad_results", "missing_folder"])
def test_bad_input_is_one_line(stores, tmp_path, capsys, case):
    a, _, c = stores
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    argv = {
        "tokens_differ": ["compare", str(a), str(c), "-o", str(tmp_path / "x.html")],
        "unknown_path": ["compare", str(tmp_path / "nothing-here.txt"), str(a), "-o", str(tmp_path / "x.html")],
        "bad_results": ["report", str(bad), "-o", str(tmp_path / "x.html")],
        "missing_folder": ["compare", str(a), str(a), "-o", str(tmp_path / "no" / "x.html")],
    }[case]
    code, err = run_main(argv, capsys)
    assert code != 0 and len(err) == 1, err
    assert "Traceback" not in err[0]
    needle = {"tokens_differ": "different tokens", "unknown_path": "no such file", "bad_results": "bad.json",
              "missing_folder": "does not exist"}[case]
    assert needle in err[0]


@pytest.mark.browser
def test_compare_report_renders_every_chart_in_chromium(stores, tmp_path):
    from selenium.webdriver.support.wait import WebDriverWait

    from psiloscope.charts import charts_for
    from tests.test_report import _chromium_driver

    a, b, _ = stores
    result = compare(str(a), str(b), **OPTS)
    html = result.to_html(tmp_path / "compare.html")
    expected = len(charts_for(result.results))
    assert expected >= 8
    driver = _chromium_driver(tmp_path / "profile")
    try:
        driver.get(html.as_uri())
        count = "return document.querySelectorAll('.vega-embed svg.marks').length"
        WebDriverWait(driver, 25, poll_frequency=0.2).until(lambda d: d.execute_script(count) >= expected)
        assert driver.execute_script(count) == expected
        assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []
    finally:
        driver.quit()
