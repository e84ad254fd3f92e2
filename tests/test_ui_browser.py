"""The try-it page (``/ui``) in a real browser, Debian's headless Chromium (``tests/browser.py``),
against a real server over the smoke-trained models: model status with a model still in
training, an uploaded test-set PNG ranked with its true label first, both sentiment models'
answers, a fraud score with its threshold, a completion that grows over several updates as it
streams, a grid of generated images; on a phone's width; and with API keys, a key asked for and
used. Every wait is on a condition in the page (``WebDriverWait``), never a sleep.

``DLSERVE_UI_SCREENSHOTS=docs/ui`` also saves the screenshots of the docs (``tests/browser.py``).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from core import training_status
from core.model_store import load_model
from harness.images import encode, load_test_images
from harness.local_server import LocalServer
from harness.payloads import SUSPICIOUS_TRANSACTION
from tests.browser import chromium, screenshot

pytestmark = pytest.mark.http
TRAINING = "text-embedder"  # not in the test server's store: a live trainer has it in hand
WAIT_S = 60
KEY = "ui-key-0123456789abcdef"


@pytest.fixture(scope="module")
def store_in_training(stored_models: dict[str, dict], tmp_path_factory: Any) -> Path:
    """A BentoML home whose store holds every smoke-trained model but ``TRAINING``, with the
    status file of a live ``training.ensure`` (this process) training it."""
    shared = Path(os.environ["BENTOML_HOME"]) / "models"
    home = tmp_path_factory.mktemp("ui-home")
    (home / "models").mkdir()
    for folder in shared.iterdir():
        if folder.name != TRAINING:
            (home / "models" / folder.name).symlink_to(folder, target_is_directory=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENTOML_HOME", str(home))
        training_status.write_status([TRAINING], [])
    return home


@pytest.fixture(scope="module")
def ui_server(store_in_training: Path) -> Iterator[LocalServer]:
    with LocalServer({"BENTOML_HOME": str(store_in_training)}) as running:
        yield running.wait("/livez")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    driver = chromium()
    yield driver
    driver.quit()


def wait_for(driver: Any, condition: Callable[[Any], Any], what: str) -> Any:
    """``condition(driver)``'s first truthy value, waiting up to ``WAIT_S``."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(condition, message=what)


def open_page(driver: Any, server: LocalServer) -> None:
    driver.get(server.url + "/ui")
    wait_for(driver, lambda d: d.execute_script("return document.readyState") == "complete", "load")


def by_id(driver: Any, element_id: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def all_by_css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def type_into(element: Any, text: str) -> None:
    element.clear()
    element.send_keys(text)


def model_state(driver: Any, name: str) -> str | None:
    rows = all_by_css(driver, f'#status-table tr[data-model="{name}"] .state')
    return rows[0].text if rows else None


def test_the_status_shows_ready_models_and_one_still_training(
    browser: Any, ui_server: LocalServer, stored_models: dict[str, dict]
) -> None:
    open_page(browser, ui_server)
    wait_for(browser, lambda d: model_state(d, TRAINING) == "training", f"{TRAINING} training")
    served = [name for name in stored_models if name != TRAINING]
    wait_for(
        browser, lambda d: all(model_state(d, n) == "ready" for n in served), "the others ready"
    )
    row = "#status-table tr[data-model='image-classifier']"
    version = all_by_css(browser, f"{row} .version")[0].text
    assert version == stored_models["image-classifier"]["version"]
    assert all_by_css(browser, f"{row} .provider")[0].text == "cpu"
    detail = all_by_css(browser, f"#status-table tr[data-model='{TRAINING}'] .detail")[0].text
    assert "training" in detail
    screenshot(by_id(browser, "status"), "status")


def correctly_classified_image(count: int = 50) -> tuple[np.ndarray, int]:
    """The first test-set image that the served (smoke-trained) classifier gets right."""
    images, labels = load_test_images(count)
    probabilities = load_model("image-classifier:latest", "cpu").run({"images": images})
    right = np.flatnonzero(probabilities["probabilities"].argmax(axis=1) == labels)
    assert right.size, f"the smoke classifier gets none of the first {count} test images right"
    return images[right[0]], int(labels[right[0]])


def test_an_uploaded_test_image_has_its_true_label_ranked_first(
    browser: Any, ui_server: LocalServer, image_model: dict, tmp_path: Path
) -> None:
    pixels, label = correctly_classified_image()
    upload = tmp_path / "fashion-mnist-test.png"
    upload.write_bytes(encode(pixels))
    open_page(browser, ui_server)
    by_id(browser, "image-file").send_keys(str(upload))  # choosing the file classifies it
    rows = wait_for(browser, lambda d: all_by_css(d, "#image-results li") or None, "the labels")
    assert len(rows) == 5  # the form's default k
    names = [row.find_element("css selector", ".bar-label").text for row in rows]
    assert names[0] == image_model["labels"][label]
    shown = [row.find_element("css selector", ".bar-value").text for row in rows]
    values = [float(text.removesuffix("%")) for text in shown]
    assert values == sorted(values, reverse=True) and 0 < values[0] <= 100
    preview = by_id(browser, "image-preview")
    width = "return arguments[0].complete && arguments[0].naturalWidth"
    wait_for(browser, lambda d: d.execute_script(width, preview) == 28, "the preview")
    screenshot(by_id(browser, "image"), "image")


def test_reviews_get_the_answers_of_both_models(browser: Any, ui_server: LocalServer) -> None:
    from selenium.webdriver.common.keys import Keys

    reviews = ["A warm, funny and moving film.", "Dull, long and pointless."]
    open_page(browser, ui_server)
    type_into(by_id(browser, "reviews"), "\n".join(reviews))
    submit = all_by_css(browser, "#sentiment-form button[type=submit]")[0]
    submit.send_keys(Keys.ENTER)  # by keyboard
    rows = wait_for(
        browser, lambda d: all_by_css(d, "#sentiment-results tbody tr") or None, "answers"
    )
    assert [row.find_element("css selector", ".review").text for row in rows] == reviews
    for kind in ("rnn", "transformer"):
        body = {"texts": reviews, "model": kind}
        answer = httpx.post(ui_server.url + "/v1/sentiment", json=body, timeout=30).json()
        for row, result in zip(rows, answer["results"], strict=True):
            shown = row.find_element("css selector", f".{kind}").text
            assert shown == f"{result['label']} {result['probability'] * 100:.1f}%"
    assert by_id(browser, "sentiment-error").text == ""
    screenshot(by_id(browser, "sentiment"), "sentiment")


def test_a_transaction_gets_its_probability_threshold_and_anomaly_score(
    browser: Any, ui_server: LocalServer
) -> None:
    open_page(browser, ui_server)
    wait_for(browser, lambda d: len(all_by_css(d, "#fraud-merchant_category option")), "choices")
    by_id(browser, "fraud-suspicious").click()
    all_by_css(browser, "#fraud-form button[type=submit]")[0].click()
    wait_for(browser, lambda d: by_id(d, "fraud-result").is_displayed(), "the score")
    body = {"transactions": [SUSPICIOUS_TRANSACTION]}
    answer = httpx.post(ui_server.url + "/v1/fraud/score", json=body, timeout=30).json()
    result = answer["results"][0]
    assert by_id(browser, "fraud-probability").text == f"{result['fraud_probability']:.4f}"
    assert by_id(browser, "fraud-threshold").text == f"{answer['decision_threshold']:.4f}"
    assert by_id(browser, "fraud-anomaly").text == f"{result['anomaly_score']:.4f}"
    decision = "fraud" if result["is_fraud"] else "not fraud"
    assert by_id(browser, "fraud-decision").text == decision
    screenshot(by_id(browser, "fraud"), "fraud")


# The completion's length after each piece of text the page adds: one DOM update each.
OBSERVE_TEXT = """
window.textLengths = [];
let length = 0;
const text = document.getElementById("completion-text");
new MutationObserver((records) => {
  for (const record of records) {
    for (const added of record.addedNodes) {
      length += added.textContent.length;
      window.textLengths.push(length);
    }
  }
}).observe(text, {childList: true});
"""


def streamed_pieces(server: LocalServer, body: dict[str, Any]) -> list[str]:
    """The text of each chunk of ``body``'s completion streamed by ``server`` (none empty)."""
    pieces = []
    with httpx.stream(
        "POST", server.url + "/v1/completions", json={**body, "stream": True}, timeout=60
    ) as answer:
        for line in answer.iter_lines():
            if line.startswith("data: {"):
                pieces += [c["text"] for c in json.loads(line[6:])["choices"] if c["text"]]
    return pieces


def test_a_completion_streams_in_over_several_updates(browser: Any, ui_server: LocalServer) -> None:
    prompt, max_tokens, seed = "ROMEO:", 24, 11  # fits the smoke model's 32-character context
    open_page(browser, ui_server)
    type_into(by_id(browser, "prompt"), prompt)
    type_into(by_id(browser, "max-tokens"), str(max_tokens))
    type_into(by_id(browser, "completion-seed"), str(seed))
    browser.execute_script(OBSERVE_TEXT)
    by_id(browser, "completion-start").click()
    state = by_id(browser, "completion-state")
    wait_for(browser, lambda d: state.get_attribute("data-state") == "done", "the stream's end")
    assert by_id(browser, "completion-error").text == ""
    assert state.text.startswith("Finished")
    shown = by_id(browser, "completion-text").get_attribute("textContent")
    body = {"prompt": prompt, "max_tokens": max_tokens, "seed": seed, "temperature": 0.8}
    pieces = streamed_pieces(ui_server, body)
    assert shown == "".join(pieces)  # the same seed: the same text as the API streams
    lengths = browser.execute_script("return window.textLengths")
    # The text grew as the chunks arrived: at least three DOM updates, each adding text, the
    # last the whole completion. (How outputs are cut into chunks depends on timing: a stream
    # whose reader is behind gets the outputs waiting for it joined into one chunk.)
    assert len(lengths) >= 3 and lengths == sorted(set(lengths)), lengths
    assert lengths[-1] == len(shown)
    screenshot(by_id(browser, "completion"), "completion")


def test_a_class_and_a_seed_give_a_grid_of_images(browser: Any, ui_server: LocalServer) -> None:
    from selenium.webdriver.support.ui import Select

    open_page(browser, ui_server)
    wait_for(browser, lambda d: len(all_by_css(d, "#generation-class option")) > 1, "classes")
    chooser = Select(by_id(browser, "generation-class"))
    chooser.select_by_index(1)
    label = chooser.first_selected_option.text
    type_into(by_id(browser, "generation-seed"), "5")
    type_into(by_id(browser, "generation-count"), "12")
    all_by_css(browser, "#generation-form button[type=submit]")[0].click()
    decoded = "return [...arguments[0]].every((i) => i.complete && i.naturalWidth === 28)"
    images = wait_for(browser, lambda d: all_by_css(d, "#generation-grid img") or None, "grid")
    assert len(images) == 12
    wait_for(browser, lambda d: d.execute_script(decoded, images), "the images decoded")
    body = {"label": label, "seed": 5, "n": 12}
    answer = httpx.post(ui_server.url + "/v1/images/generate", json=body, timeout=30).json()
    shown = [image.get_attribute("src").split(",", 1)[1] for image in images]
    assert shown == answer["images"]
    assert base64.b64decode(shown[0]).startswith(b"\x89PNG")
    screenshot(by_id(browser, "generation"), "generation")


def test_the_page_fits_a_phone_and_every_control_has_a_label(ui_server: LocalServer) -> None:
    phone = chromium(390, 844)
    try:
        open_page(phone, ui_server)
        wait_for(phone, lambda d: model_state(d, "fraud-scorer") == "ready", "the status")
        overflow = "return document.documentElement.scrollWidth - window.innerWidth"
        assert phone.execute_script(overflow) <= 0  # no sideways scrolling
        unlabelled = phone.execute_script(
            "return [...document.querySelectorAll('input, select, textarea')]"
            ".filter((e) => e.labels.length === 0).map((e) => e.id)"
        )
        assert unlabelled == []
        screenshot(phone, "phone")
    finally:
        phone.quit()


@pytest.fixture(scope="module")
def keyed_server(stored_models: dict[str, dict]) -> Iterator[LocalServer]:
    env = {"DLSERVE_MODELS": "fraud", "DLSERVE_API_KEYS": KEY}
    with LocalServer(env) as running:
        yield running.wait("/readyz")


def test_with_api_keys_the_page_asks_for_one_and_uses_it(
    browser: Any, keyed_server: LocalServer
) -> None:
    open_page(browser, keyed_server)
    panel = by_id(browser, "key-panel")
    wait_for(browser, lambda d: panel.is_displayed(), "the key's question")
    assert browser.switch_to.active_element == by_id(browser, "key-input")
    assert model_state(browser, "fraud-scorer") is None
    screenshot(panel, "key")
    by_id(browser, "key-input").send_keys("not-the-key-0123456789\n")
    message = by_id(browser, "key-message")
    wait_for(browser, lambda d: panel.is_displayed() and "refused" in message.text, "refused")
    by_id(browser, "key-input").send_keys(KEY + "\n")
    wait_for(browser, lambda d: model_state(d, "fraud-scorer") == "ready", "the status")
    assert not panel.is_displayed()
    all_by_css(browser, "#fraud-form button[type=submit]")[0].click()
    wait_for(browser, lambda d: by_id(d, "fraud-result").is_displayed(), "the score")
    stored = "return [sessionStorage.getItem('dlserve-api-key'), localStorage.length]"
    assert browser.execute_script(stored) == [KEY, 0]  # this tab only
