"""The published site in a real browser (headless Chromium through Selenium): the matrix renders
with the expected number of rows, every internal link and image resolves, the filters work, no
JavaScript error is logged, and markup in case ids and API strings renders as text. A screenshot
of the index is saved to reports/browser/index.png.

Skipped, with the reason, where Chromium, chromedriver or selenium is absent (`.ci/run` installs
Debian's chromium and chromium-driver, so CI runs it).
"""
from __future__ import annotations

import json
import os
import shutil
import urllib.parse

import numpy as np
import pandas as pd
import pytest

from harness import results, website
from harness.spec import RESULT_COLUMNS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCREENSHOT = os.path.join(ROOT, "reports", "browser", "index.png")
XSS_CASE = 'user/<script>window.__xss = 1;</script><img src=x onerror="window.__xss=2">'
XSS_API = "evil.<b>bold</b>_loss"


def _browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -r requirements.lock)")
    binary = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    driver_path = shutil.which("chromedriver")
    if not binary or not driver_path:
        pytest.skip("Chromium or chromedriver not found (Debian: apt-get install chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1400,1000", "--allow-file-access-from-files"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)


def _row(**kw):
    r = dict.fromkeys(RESULT_COLUMNS, "")
    r.update(category="baseline", family="sigmoid", framework_version="1.0", device="cpu", quantity="loss", status="match",
             max_ulp=0.0, tol_ulp=4.0, max_abs_err=0.0, max_rel_err=0.0, expected=1.0, actual=1.0, n_elements=1,
             actual_dtype="float32", reference="float64", seconds=0.01, max_ulp_finite=0.0, cond=np.nan,
             cond_ulp=np.nan, repro="")
    r.update(kw)
    r["category"] = r["case_id"].split("/", 1)[0] if "/" in r["case_id"] else "user"
    return r


def _synthetic_run(tmp_path) -> tuple[str, pd.DataFrame]:
    """A small results table with every status, two frameworks, gradients, and hostile strings."""
    rows = []
    for fw, api in [("alpha", "alpha.sigmoid_ce"), ("alpha", "alpha.softmax_ce"), ("beta", "beta.sigmoid_ce"),
                    ("beta", XSS_API)]:
        for dt in ("float16", "float32"):
            rows.append(_row(case_id="baseline/sigmoid/a", api=api, framework=fw, dtype=dt))
            rows.append(_row(case_id="extreme/sigmoid/b", api=api, framework=fw, dtype=dt, status="discrepancy",
                             max_ulp=900.0, max_ulp_finite=900.0, worst_input="x=-6.11 z=0",
                             repro="import torch\nprint('</code></pre><script>window.__xss=3</script>')\n"))
            rows.append(_row(case_id=XSS_CASE, api=api, framework=fw, dtype=dt, status="match"))
            rows.append(_row(case_id="extreme/sigmoid/b", api=api, framework=fw, dtype=dt, quantity="grad_logits",
                             status="match" if fw == "alpha" else "nonfinite_mismatch", max_ulp=np.inf))
    rows.append(_row(case_id="weights/sigmoid/c", api="alpha.softmax_ce", framework="alpha", dtype="float32",
                     status="raised", detail="ValueError: <bad> shapes\nsecond line"))
    rows.append(_row(case_id="weights/sigmoid/c", api="beta.sigmoid_ce", framework="beta", dtype="float32",
                     status="unsupported", detail="not expressible"))
    rows.append(_row(case_id="shapes/sigmoid/d", api="gamma.only_unsupported", framework="gamma", dtype="float32",
                     status="unsupported", detail="not expressible"))
    df = pd.DataFrame(rows)
    for c in df.columns:  # as runner writes it: numbers as floats, text as str
        if c in ("max_ulp", "tol_ulp", "max_abs_err", "max_rel_err", "expected", "actual", "seconds",
                 "max_ulp_finite", "cond", "cond_ulp"):
            df[c] = df[c].astype(float)
    run = tmp_path / "run"
    run.mkdir()
    results.save(df, str(run))
    meta = {"date": "2026-01-01T00:00:00+00:00", "revision": "<rev>", "seed": 0, "cases": "synthetic",
            "frameworks": ["alpha", "beta", "gamma"], "dtypes": ["float16", "float32"],
            "versions": {"alpha": "1.0", "beta": "<2.0>"}, "platform": {"system": "test", "machine": "x", "cpus": 1},
            "device": "cpu", "reference": {"float32": "float64"}, "elapsed_s": 1.0,
            "apis": [{"framework": "alpha", "api": "alpha.sigmoid_ce", "family": "sigmoid",
                      "params": {"pos_weight": "pos_weight"}, "reductions": {"mean": "mean"},
                      "reduction_arg": "reduction", "fixed": {}, "composition": "", "dtypes": ["float32"],
                      "conventions": {}}]}
    (run / "run.json").write_text(json.dumps(meta))
    return str(run), df


def _expected_rows(df: pd.DataFrame, framework: str | None = None) -> int:
    """Matrix rows: (framework, api, loss|gradient) with any row that is not unsupported."""
    d = df[df.status != "unsupported"]
    if framework:
        d = d[d.framework == framework]
    return len({(r.framework, r.api, "loss" if r.quantity == "loss" else "gradient") for r in d.itertuples()})


def _severe(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


#: in one round trip per page: every link's resolved href, and per image whether its source loads
#: (a lazy image below the fold has not loaded yet: its source is loaded into a fresh Image)
_PAGE_SCRIPT = """
var done = arguments[arguments.length - 1];
var hrefs = Array.from(document.querySelectorAll('a[href]'), function (a) { return a.href; });
var imgs = Array.from(document.getElementsByTagName('img'));
Promise.all(imgs.map(function (img) {
  return new Promise(function (resolve) {
    var im = new Image();
    im.onload = function () { resolve([img.src, im.naturalWidth > 0]); };
    im.onerror = function () { resolve([img.src, false]); };
    im.src = img.src;
  });
})).then(function (loaded) { done([hrefs, loaded]); });
"""


def _crawl(driver, site: str) -> set[str]:
    """Visit every page reachable from index.html by internal links; assert each link and image
    resolves and no page logs a JavaScript error. Returns the pages visited."""
    todo, seen = [os.path.join(site, "index.html")], set()
    anchors: dict[str, str] = {}  # an HTML file's text, read once for every #fragment into it
    while todo:
        page = todo.pop()
        if page in seen:
            continue
        seen.add(page)
        driver.get("file://" + page)
        assert _severe(driver) == [], f"JavaScript errors on {page}"
        hrefs, images = driver.execute_async_script(_PAGE_SCRIPT)
        for src, ok in images:
            assert ok, f"image {src} does not load on {page}"
        for href in hrefs:
            u = urllib.parse.urlparse(href)
            if u.scheme != "file":
                continue
            target = urllib.parse.unquote(u.path)
            assert os.path.isfile(target), f"broken link {href} on {page}"
            if u.fragment and target.endswith(".html"):
                if target not in anchors:
                    with open(target, encoding="utf-8") as f:
                        anchors[target] = f.read()
                assert f'id="{u.fragment}"' in anchors[target], f"missing anchor #{u.fragment} in {target}"
            if target.endswith(".html"):
                todo.append(target)
    return seen


def test_site_in_headless_chromium(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver = _browser()
    try:
        run, df = _synthetic_run(tmp_path)
        index = website.build(run, str(tmp_path / "site"))
        site = os.path.dirname(index)
        driver.get("file://" + index)
        rows = driver.find_elements(By.CSS_SELECTOR, "#matrix tbody tr.matrix-row")
        assert len(rows) == _expected_rows(df) == 8
        assert _severe(driver) == []

        # filters: framework, then dtype (hides the other dtype's cells), then quantity and text
        Select(driver.find_element(By.ID, "f-framework")).select_by_value("beta")
        visible = [r for r in rows if r.is_displayed()]
        assert len(visible) == _expected_rows(df, "beta") == 4
        assert all(r.get_attribute("data-framework") == "beta" for r in visible)
        Select(driver.find_element(By.ID, "f-dtype")).select_by_value("float16")
        cells = driver.find_elements(By.CSS_SELECTOR, "#matrix td[data-dtype]")
        shown = {c.get_attribute("data-dtype") for c in cells if c.is_displayed()}
        assert shown == {"float16"}
        Select(driver.find_element(By.ID, "f-quantity")).select_by_value("gradient")
        assert len([r for r in rows if r.is_displayed()]) == 2
        driver.find_element(By.ID, "f-text").send_keys("sigmoid")
        assert len([r for r in rows if r.is_displayed()]) == 1
        assert "1 of 8 rows shown" in driver.find_element(By.ID, "shown").text
        assert _severe(driver) == []

        # escaping: the hostile strings are text, nothing ran
        driver.get("file://" + os.path.join(site, "index.html"))
        assert XSS_API in driver.find_element(By.ID, "matrix").text
        assert driver.execute_script("return window.__xss === undefined")
        pages = _crawl(driver, site)
        assert {"index.html", "accuracy.html", "errors.html", "discrepancies.html", "plots.html", "run.html"} <= \
            {os.path.basename(p) for p in pages}
        assert sum(p.endswith(".html") and os.sep + "api" + os.sep in p for p in pages) == 5
        api_page = os.path.join(site, "api", website.slug("beta", XSS_API))
        driver.get("file://" + api_page)
        assert driver.execute_script("return window.__xss === undefined")
        assert "<script>window.__xss=3</script>" in driver.find_element(By.CSS_SELECTOR, ".repro pre").text
        assert XSS_API in driver.find_element(By.TAG_NAME, "h1").text
        driver.get("file://" + os.path.join(site, "errors.html"))
        assert "ValueError: <bad> shapes" in driver.page_source.replace("&lt;", "<").replace("&gt;", ">")
        assert "second line" not in driver.find_element(By.TAG_NAME, "main").text

        os.makedirs(os.path.dirname(SCREENSHOT), exist_ok=True)
        driver.get("file://" + index)
        assert driver.save_screenshot(SCREENSHOT)
        assert os.path.getsize(SCREENSHOT) > 1000
    finally:
        driver.quit()


def test_published_site_in_headless_chromium():
    """The committed reports/published/ site: every page reachable, no broken link or image, no
    JavaScript error, and its matrix has as many rows as its own summary file says."""
    from selenium.webdriver.common.by import By

    site = os.path.join(ROOT, "reports", "published")
    if not os.path.isfile(os.path.join(site, "index.html")):
        pytest.skip("reports/published/ is not built (make report)")
    driver = _browser()
    try:
        driver.get("file://" + os.path.join(site, "index.html"))
        with open(os.path.join(site, "site.json")) as f:
            summary = json.load(f)
        assert len(driver.find_elements(By.CSS_SELECTOR, "#matrix tbody tr.matrix-row")) == summary["matrix_rows"] > 0
        _crawl(driver, site)
    finally:
        driver.quit()
