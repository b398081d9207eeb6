"""The HTML report: offline, self-contained, readable; and drawn without errors by headless Chromium."""

from __future__ import annotations

import importlib.util
import os
from html.parser import HTMLParser
from pathlib import Path

import pytest

from psiloscope.report import charts_for, render_report, vega_bundle
from psiloscope.results import SCHEMA, ResultsError

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).parent / "artifacts"


def _computed_results(**kwargs) -> dict:
    # Loaded by file path so the import works whichever pytest import mode or package layout is in use.
    source = Path(__file__).with_name("test_report_results.py")
    spec = importlib.util.spec_from_file_location("psiloscope_test_report_results", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.computed_results(**kwargs)


@pytest.fixture(scope="module")
def results() -> dict:
    return _computed_results(path_a="runs/<adapted> & co", path_b="base")


@pytest.fixture(scope="module")
def report_path(results, tmp_path_factory) -> Path:
    return render_report(results, tmp_path_factory.mktemp("report") / "report.html")


class _ResourceCollector(HTMLParser):
    """Every URL the page would load by itself: script src, link href, img/iframe/source/... src."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.module_scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "script" and attributes.get("type") == "module":
            self.module_scripts += 1
        for name in ("src", "href", "srcset", "data", "poster"):
            if attributes.get(name) and (tag != "a" or name != "href"):
                self.urls.append(attributes[name])


def test_report_loads_nothing_from_the_network_and_inlines_the_bundle_once(report_path):
    page = report_path.read_text()
    collector = _ResourceCollector()
    collector.feed(page)
    assert collector.urls == []
    assert "@import" not in page and "url(http" not in page
    assert collector.module_scripts == 2  # the bundle, then the code that embeds every chart
    assert page.count(vega_bundle()) == 1
    assert page.count("window.vegaEmbed=") == 1


def test_report_has_every_chart_and_the_summary_in_words(results, report_path):
    page = report_path.read_text()
    charts = charts_for(results)
    assert len(charts) == 12
    assert f'data-chart-count="{len(charts)}"' in page
    for name in charts:
        figure = page.split(f'id="chart-{name}"')[1].split("</figure>")[0]
        assert len(figure.split("<figcaption>")[1].split("</figcaption>")[0]) > 40, f"{name} lacks a caption"
    assert "novelty window at layers 2-3" in page
    assert "Not computed" not in page
    assert "<table>" in page and "alpha0" in page


def test_report_escapes_text(report_path):
    page = report_path.read_text()
    assert "runs/&lt;adapted&gt; &amp; co" in page
    assert "<adapted>" not in page and "<b>not bold</b>" not in page


def test_missing_sections_are_listed_as_not_computed(results, tmp_path):
    bare = {"schema": SCHEMA, "meta": results["meta"], "layers": results["layers"]}
    page = render_report(bare, tmp_path / "bare.html").read_text()
    assert list(charts_for(bare)) == ["layers"]
    assert 'data-chart-count="1"' in page
    for title in ("Attention heads", "Principal components", "Linear probes", "Training", "Novelty windows"):
        assert title in page.split("Not computed:")[1].split("</p>")[0]


def test_an_empty_document_gives_a_page_without_charts_or_scripts(tmp_path):
    page = render_report({"schema": SCHEMA}, tmp_path / "empty.html").read_text()
    assert 'data-chart-count="0"' in page and "<script" not in page
    assert "What was compared was not recorded" in page and "Not computed: Layer-wise similarity" in page


def test_heatmaps_put_layer_zero_at_the_origin_on_a_fixed_scale(results):
    spec = charts_for(results)["matrices"].to_dict()
    for panel in spec["hconcat"]:
        encoding = panel["encoding"]
        assert encoding["x"]["sort"][0] == "0" and encoding["y"]["sort"][-1] == "0"  # y runs bottom-up
        assert encoding["color"]["scale"]["domain"] == [0, 1]


def test_render_refuses_invalid_results(tmp_path):
    with pytest.raises(ResultsError, match="unsupported schema"):
        render_report({"schema": "other"}, tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


# --- in a browser ------------------------------------------------------------------------------------------


def _chromium_driver(user_data_dir: Path):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip(f"needs {CHROMIUM} and {CHROMEDRIVER} (Debian packages chromium, chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the project's test extra)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        "--window-size=1280,1400",
        f"--user-data-dir={user_data_dir}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path keeps selenium-manager from looking for (and downloading) a driver.
    # The suite runs with OpenBLAS preloaded for MLX (trainer.blas); Chromium must not inherit that preload.
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER), env=env), options=options)


@pytest.mark.browser
def test_report_renders_every_chart_offline_in_chromium(results, report_path, tmp_path):
    expected = len(charts_for(results))
    driver = _chromium_driver(tmp_path / "chromium-profile")
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    def drawn_charts(driver) -> int:
        # vega-embed marks its container .vega-embed; the chart itself is the svg.marks inside it.
        return driver.execute_script("return document.querySelectorAll('.vega-embed svg.marks').length")

    try:
        driver.get(report_path.as_uri())
        WebDriverWait(driver, 25, poll_frequency=0.2).until(lambda d: drawn_charts(d) >= expected)
        assert drawn_charts(driver) == expected
        assert driver.execute_script("return document.querySelector('main.report').dataset.chartsDrawn") == str(
            expected
        )
        # Tooltips carry exact values: hover the first cell of the per-head matrix.
        cell = driver.find_element(By.CSS_SELECTOR, "#chart-heads g.mark-rect path")
        ActionChains(driver).move_to_element(cell).perform()
        tooltip = WebDriverWait(driver, 5).until(
            lambda d: d.execute_script(
                "const t = document.getElementById('vg-tooltip-element');"
                "return t && t.classList.contains('visible') ? t.innerText : null"
            )
        )
        assert "CKA" in tooltip and "head" in tooltip
        fetched = driver.execute_script(
            "return performance.getEntriesByType('resource').map(function (e) { return e.name; })"
        )
        assert [url for url in fetched if url.startswith(("http:", "https:"))] == []
        assert [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"] == []
        ARTIFACTS.mkdir(exist_ok=True)
        driver.execute_script("window.scrollTo(0, 0)")
        driver.save_screenshot(str(ARTIFACTS / "report-top.png"))
    finally:
        driver.quit()
