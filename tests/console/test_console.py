"""The console (GET /) and the API docs (GET /docs) in headless chromium, against the local API:
every seed model listed, Predict from each model's prefilled example row shows the label the
API gives for that same request, a drawn digit predicts, a bad table value shows the API's own
error text, Explain draws its chart, Swagger UI's "Try it out" reaches the API, and the API key
is asked once and sent as x-api-key; the Monitoring tab draws the drift report's bars with
their threshold line and a feature's baseline against its captured histogram."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from playwright.sync_api import expect

from model_registry import registry
from tests.conftest import MODELS_DIR, local_api_server
from tests.console.conftest import Page, ensure_chromium

SEED_MODELS = ("breast-cancer-mlp", "diabetes-linear", "text-topics", "digits-cnn")


def open_model(tab: Page, name: str) -> None:
    tab.page.goto(tab.base + "/")
    tab.page.click(f'.model-item[data-model="{name}"]')
    tab.page.wait_for_selector("#editor-card:not([hidden])")


def press(tab: Page, button: str) -> dict[str, Any]:
    """Click Predict or Explain; the request body the page sent, once its answer is shown."""
    with tab.page.expect_request(lambda r: r.method == "POST" and "/v2/models/" in r.url) as sent:
        tab.page.click(button)
    tab.page.wait_for_selector("#result-card:not([hidden])")
    # Playwright's own waits, not wait_for_function: its in-page polling evaluates a string,
    # which the console's Content-Security-Policy (no 'unsafe-eval') refuses
    expect(tab.page.locator("#curl")).not_to_be_empty()
    body: dict[str, Any] = json.loads(sent.value.post_data or "{}")
    return body


def expected_answer(outputs: list[dict[str, Any]]) -> str:
    """The value the page shows for an answer: the label (or a regression's prediction)."""
    by_name = {o["name"]: o for o in outputs}
    value = (by_name.get("label") or by_name["prediction"])["data"][0]
    return str(value)


def example_row(name: str) -> np.ndarray:
    current = next(e.current for e in registry.load() if e.name == name)
    document = json.loads((MODELS_DIR / name / current / "examples.json").read_text())
    (rows,) = document["inputs"].values()
    return np.asarray(rows[0], dtype=object if name == "text-topics" else np.float32)


def test_the_console_lists_every_seed_model_without_errors(tab: Page) -> None:
    tab.page.goto(tab.base + "/")
    tab.page.wait_for_selector(".model-item")
    listed = tab.page.eval_on_selector_all(".model-item",
                                           "items => items.map(i => i.dataset.model)")
    assert set(SEED_MODELS) <= set(listed)
    # The server's readiness asks every model function (cold starts): wait for its answer.
    expect(tab.page.locator("#server-state")).not_to_have_text("server …", timeout=60_000)
    assert tab.page.text_content("#server-state") == "server ready"
    assert tab.errors == []


@pytest.mark.parametrize("name", SEED_MODELS)
def test_predict_from_the_prefilled_example_shows_the_apis_label(
        tab: Page, api: tuple[httpx.Client, str], name: str) -> None:
    # Given the model's page, its editor prefilled with the first example row
    open_model(tab, name)
    assert tab.page.text_content("#model-state") == "ready"
    labels = tab.page.text_content("#labels") or ""
    # When Predict is pressed
    sent = press(tab, "#predict-button")
    # Then the request is that real example row, and the page shows what the API answers to it
    (tensor,) = sent["inputs"]
    row = example_row(name)
    if row.dtype == object:
        assert tensor["data"] == [row.item() if row.ndim == 0 else str(row)]
    else:
        assert np.array_equal(np.asarray(tensor["data"], np.float32).reshape(row.shape), row)
    answer = api[0].post(f"/v2/models/{name}/infer", json=sent)
    assert answer.status_code == 200, answer.text
    shown = tab.page.get_attribute("#answer-label", "data-value")
    assert shown == expected_answer(answer.json()["outputs"])
    if name != "diabetes-linear":  # classifiers: the probabilities as a bar chart, the labels
        assert tab.page.is_visible("#chart-probabilities") and labels
    assert "curl -s -X POST" in (tab.page.text_content("#curl") or "")
    assert json.loads(tab.page.text_content("#raw-answer") or "")["model_name"] == name
    tab.screenshot(name)
    assert tab.errors == []


def test_the_digits_canvas_takes_a_drawn_stroke_and_predicts(
        tab: Page, api: tuple[httpx.Client, str]) -> None:
    open_model(tab, "digits-cnn")
    tab.page.click("#clear-button")
    box = tab.page.locator("#draw-canvas").bounding_box()
    assert box is not None
    # A "1": one vertical stroke down the middle
    x = box["x"] + box["width"] * 0.5
    tab.page.mouse.move(x, box["y"] + box["height"] * 0.1)
    tab.page.mouse.down()
    for step in range(1, 11):
        tab.page.mouse.move(x, box["y"] + box["height"] * (0.1 + 0.08 * step))
    tab.page.mouse.up()
    sent = press(tab, "#predict-button")
    pixels = np.asarray(sent["inputs"][0]["data"], np.float32).reshape(8, 8)
    assert pixels[:, 4].sum() > 0 and pixels[:, 0].sum() == 0  # the stroke, and only it
    answer = api[0].post("/v2/models/digits-cnn/infer", json=sent).json()
    assert tab.page.get_attribute("#answer-label", "data-value") == expected_answer(
        answer["outputs"])
    tab.screenshot("digits-cnn-drawn")
    assert tab.errors == []


def test_a_bad_value_typed_into_the_table_shows_the_apis_error(
        tab: Page, api: tuple[httpx.Client, str]) -> None:
    open_model(tab, "breast-cancer-mlp")
    tab.page.fill('.feature input[data-index="3"]', "12,5 mm")
    sent = press(tab, "#predict-button")
    refused = api[0].post("/v2/models/breast-cancer-mlp/infer", json=sent)
    assert refused.status_code == 400
    assert tab.page.text_content("#result-error") == refused.json()["error"]
    assert tab.page.is_visible("#result-error")
    # The browser logs the 400 itself; nothing else may go wrong
    assert [e for e in tab.errors if "status of 400" not in e] == []


@pytest.mark.parametrize("name", SEED_MODELS)
def test_explain_shows_the_attributions(tab: Page, api: tuple[httpx.Client, str],
                                        name: str) -> None:
    open_model(tab, name)
    sent = press(tab, "#explain-button")
    answer = api[0].post(f"/v2/models/{name}/explain", json=sent)
    assert answer.status_code == 200, answer.text
    assert tab.page.is_hidden("#result-error")
    shown = {"digits-cnn": "#heatmap", "text-topics": "#token-view"}.get(
        name, "#chart-attributions")
    assert tab.page.is_visible(shown)
    # The explanation in words, above the chart: the answer's first sentence
    summary = answer.json()["parameters"]["summary"].split("\n")[0]
    assert summary.startswith("Predicted ")
    assert tab.page.text_content("#explanation-summary") == summary
    tab.screenshot(f"{name}-explain")
    assert tab.errors == []


def test_swagger_ui_renders_and_try_it_out_reaches_the_api(tab: Page) -> None:
    tab.page.goto(tab.base + "/docs")
    ready = tab.page.locator(".opblock-get").filter(
        has=tab.page.locator('[data-path="/v2/health/ready"]'))
    ready.locator(".opblock-summary").click()
    ready.locator("button.try-out__btn").click()
    ready.locator("button.execute").click()
    status = ready.locator(".live-responses-table tr.response .response-col_status").first
    status.wait_for()
    assert status.inner_text().strip() == "200"
    assert '"ready": true' in ready.locator(".live-responses-table .microlight").first.inner_text()
    tab.screenshot("docs")
    assert tab.errors == []


@pytest.fixture(scope="module")
def keyed_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("console-keyed") / "server.log"
    with local_api_server(log, api_key="console-test-key") as (_, port):
        yield f"http://127.0.0.1:{port}"


def test_with_an_api_key_the_page_asks_once_and_sends_it(browser: Any, keyed_api: str,
                                                         tmp_path: Path) -> None:
    ensure_chromium()
    context = browser.new_context()
    page = context.new_page()
    keys: list[str | None] = []
    page.on("request", lambda r: keys.append(r.headers.get("x-api-key"))
            if "/v2/" in r.url else None)
    page.goto(keyed_api + "/")  # the page itself needs no key
    page.wait_for_selector("#key-dialog[open]")
    page.fill("#key-input", "console-test-key")
    page.click('#key-dialog button[value="save"]')
    page.wait_for_selector('.model-item[data-model="digits-cnn"]')
    page.click('.model-item[data-model="digits-cnn"]')
    page.wait_for_selector("#editor-card:not([hidden])")
    assert page.evaluate("sessionStorage.getItem('model-api-key')") == "console-test-key"
    assert page.is_hidden("#key-dialog[open]")  # asked once
    assert keys[-1] == "console-test-key" and keys.count("console-test-key") >= 3
    context.close()


def test_the_monitoring_tab_shows_drift_per_feature_and_a_features_histograms(
        tab: Page, api: tuple[httpx.Client, str], capture_dir: Path) -> None:
    from datetime import UTC, datetime

    from model_api.monitoring import reports

    from model_export.breast_cancer import splits
    from tests.monitoring.test_monitoring import MODEL, SCALED, _infer, _monitor, _wait_for_rows

    # Given no report yet: the tab shows the API's 404 and its hint
    open_model(tab, MODEL)
    tab.page.click("#tab-monitoring")
    expect(tab.page.locator("#monitoring-error")).to_contain_text("make monitor")
    assert tab.page.is_hidden("#editor-card")
    # When the held-back rows come with two features scaled by 1.3, and make monitor runs
    rows = splits().test.x.copy()
    rows[:, [0, 21]] *= 1.3  # mean radius, worst texture
    start = datetime.now(UTC)
    _infer(api[0], rows)
    _wait_for_rows(capture_dir, MODEL, start, len(rows))
    report = _monitor(capture_dir, MODEL, start, datetime.now(UTC))
    assert sorted(f["name"] for f in report["features"] if f["drifted"]) == sorted(SCALED)
    assert reports.latest_key(MODEL)
    # Then the tab draws the bars with the threshold line, and the histograms of a drifted one
    tab.page.click("#tab-try")
    tab.page.click("#tab-monitoring")
    tab.page.wait_for_selector("#chart-drift-psi")
    tab.page.wait_for_selector("#chart-histogram")
    expect(tab.page.locator("#monitoring-status")).to_have_text("2 drifted")
    assert tab.page.is_hidden("#monitoring-error")
    assert tab.page.input_value("#monitoring-feature") in SCALED
    tab.page.select_option("#monitoring-feature", "worst texture")
    tab.page.wait_for_selector("#chart-histogram")
    tab.screenshot("breast-cancer-mlp-monitoring")
    # The browser logs the first 404 itself; nothing else may go wrong
    assert [e for e in tab.errors if "status of 404" not in e] == []


def test_a_model_still_loading_shows_as_loading_then_ready(tab: Page) -> None:
    """A large model that is still loading from the model store (README, "Large models")
    answers its ready route and the server's 503 with Retry-After and is LOADING in the
    repository index (tests/model_registry/test_large_model.py: a real 400 MB one). The seed
    models load at once, so here the local API's answers about digits-cnn are replaced by
    those in the browser's network layer (Playwright's routes) while `loading` holds; then
    the real ones go through and the page, looking again after Retry-After, shows it ready."""
    loading = {"on": True}
    message = ("model 'digits-cnn' version '1' is loading: 42% of 400 MB read from the model "
               "store; retry after 1 s")

    def ready(route: Any) -> None:
        if not loading["on"]:
            route.continue_()
            return
        route.fulfill(status=503, headers={"Retry-After": "1"},
                      content_type="application/json", body=json.dumps({"error": message}))

    def index(route: Any) -> None:
        response = route.fetch()
        entries = response.json()
        for entry in entries if loading["on"] else []:
            if entry["name"] == "digits-cnn":
                entry.update(state="LOADING", reason=message)
        route.fulfill(response=response, json=entries)

    # Given digits-cnn still loading
    for pattern, handler in (("**/v2/models/digits-cnn/ready", ready),
                             ("**/v2/health/ready", ready), ("**/v2/repository/index", index)):
        tab.page.route(pattern, handler)

    # When its page is open, it says so: the badge, its title (how far), the list, the server
    open_model(tab, "digits-cnn")
    badge = tab.page.locator("#model-state")
    expect(badge).to_have_text("loading…")
    assert "42% of 400 MB" in (badge.get_attribute("title") or "")
    item = tab.page.locator('.model-item[data-model="digits-cnn"]')
    expect(item).to_contain_text("(loading)")
    expect(tab.page.locator("#server-state")).to_have_text("server loading")
    tab.screenshot("digits-cnn-loading")

    # Then, once it has loaded, the page looks again by itself and shows it ready
    loading["on"] = False
    expect(badge).to_have_text("ready", timeout=15_000)
    expect(item).not_to_contain_text("(loading)", timeout=15_000)
    expect(tab.page.locator("#server-state")).to_have_text("server ready", timeout=60_000)
    assert [e for e in tab.errors if "status of 503" not in e] == []
