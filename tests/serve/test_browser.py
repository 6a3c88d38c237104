"""The web page in a real browser: headless Chromium drives the page of ``rhythmhead serve``.

A real uvicorn server runs the app as ``rhythmhead serve`` builds it (``create_app`` + ``web.mount``) in a background
thread on a free port, with the tiny random bundle. Chromium is Debian's ``chromium`` + ``chromium-driver`` (selenium
talks to ``/usr/bin/chromedriver``: nothing is downloaded at run time). Under ``CI=true`` these tests always run (a
missing browser fails them); elsewhere they are skipped only when ``/usr/bin/chromium`` is absent.

Screenshots are saved in each test's tmp folder (``page.png``, ``bad_upload.png``).
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import pytest

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
if not CHROMIUM.exists() and not os.environ.get("CI"):
    pytest.skip("no /usr/bin/chromium (apt-get install chromium chromium-driver)", allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402 - after the skip

ASSETS = Path(str(resources.files("rhythmhead") / "assets"))
PHOTO, SPEECH = ASSETS / "demo_photo.png", ASSETS / "demo_speech.wav"
JOB_TIMEOUT_S = 240  # the whole job on 2 shared cores (the tiny bundle itself takes seconds)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The app of ``rhythmhead serve`` (tiny random bundle) served by uvicorn in a thread: ``(base URL, manager)``."""
    from rhythmhead.inference.pipeline import TalkingHeadPipeline
    from rhythmhead.inference.random_bundle import write_random_bundle
    from rhythmhead.serve import web
    from rhythmhead.serve.api import create_app
    from rhythmhead.serve.jobs import JobManager
    from rhythmhead.serve.local import LocalServer

    bundle = write_random_bundle(tmp_path_factory.mktemp("bundle"), "tiny")
    pipe = TalkingHeadPipeline.load(bundle, preset="fast", chunk=10)
    manager = JobManager(pipe, tmp_path_factory.mktemp("work"), workers=1)
    try:
        with LocalServer(web.mount(create_app(manager), manager)) as server:
            yield server.url + "/", manager
    finally:
        manager.close(grace=5)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--mute-audio",
                "--autoplay-policy=no-user-gesture-required", "--window-size=1400,2200",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def _wait(driver, what, timeout: float = 60, why: str = "the page"):
    """``what(driver)`` once it is truthy; after ``timeout`` s an AssertionError with the page's text."""
    from selenium.common.exceptions import (ElementClickInterceptedException, StaleElementReferenceException,
                                            TimeoutException)
    from selenium.webdriver.support.ui import WebDriverWait

    retried = (StaleElementReferenceException, ElementClickInterceptedException)  # Gradio re-renders as it starts
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.25, ignored_exceptions=retried).until(what)
    except TimeoutException:
        raise AssertionError(f"timed out after {timeout} s waiting for {why}; the page says:\n"
                             f"{_page_text(driver)[-3000:]}") from None


def _open(driver, url: str) -> None:
    """Load the page afresh and wait until Gradio has built it."""
    driver.get(url)
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#reference input[type=file]")
          and d.find_elements(By.CSS_SELECTOR, "#speech input[type=file]") and d.find_elements(By.ID, "generate"))


def _click(driver, by: str, where: str) -> None:
    """Click an element as soon as it is there and takes the click."""
    _wait(driver, lambda d: d.find_element(by, where).click() or True, 30, f"{where} to take a click")


def _text_of(driver, elem_id: str) -> str:
    """The text of component ``elem_id`` without white space (Gradio splits a file name into elements)."""
    return "".join(driver.execute_script("return document.getElementById(arguments[0]).textContent",
                                         elem_id).split())


def _has_speech(driver) -> bool:
    return bool(driver.find_elements(By.CSS_SELECTOR, "#speech audio, #speech [data-testid=waveform-controls]"))


def _upload(driver, elem_id: str, path: Path, shown) -> None:
    """Give a file to the upload area of component ``elem_id``; wait until ``shown(driver)``."""
    driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=file]").send_keys(str(path))
    _wait(driver, shown, 60, f"the upload of {path.name}")


def _screenshot(driver, path: Path) -> None:
    """The whole page as a PNG (the window grown to the page's height)."""
    for _ in range(3):  # growing the window reflows the page: until its height holds
        height = driver.execute_script("return Math.max(...[document.documentElement, document.body, "
                                       "...document.querySelectorAll('.gradio-container')].map(e => e.scrollHeight))")
        if driver.get_window_size()["height"] >= height + 40:
            break
        driver.set_window_size(1400, height + 120)
    assert driver.save_screenshot(str(path))


def _page_text(driver) -> str:
    return driver.execute_script("return document.body.innerText")


def test_page_generates_a_video_that_plays(served, browser, tmp_path):
    _open(browser, served[0])
    # the controls come from GenerationControls: one widget per field, e.g. the motion-scale slider's range
    slider = _wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#control-motion_scale input[type=range]"))
    assert (slider.get_attribute("min"), slider.get_attribute("max")) == ("0", "5")
    _upload(browser, "reference", PHOTO, lambda d: PHOTO.name in _text_of(d, "reference"))
    _upload(browser, "speech", SPEECH, _has_speech)
    _click(browser, By.ID, "generate")

    video = _wait(browser, lambda d: next((v for v in d.find_elements(By.CSS_SELECTOR, "#result video")
                                           if v.get_attribute("src")), None), JOB_TIMEOUT_S)
    duration = _wait(browser, lambda d: d.execute_script(
        "const v = arguments[0]; return v.readyState >= 1 && v.duration > 0 ? v.duration : null;", video))
    assert 7.0 < duration < 8.5  # the speech is 7.6 s
    browser.execute_script("arguments[0].muted = true; arguments[0].play();", video)
    _wait(browser, lambda d: d.execute_script(
        "const v = arguments[0]; return v.currentTime > 0 || v.readyState >= 2;", video), 30)

    download = browser.find_element(By.CSS_SELECTOR, "#download")
    assert download.is_displayed() and "Download" in download.text
    for plot in ("pose-curves", "mouth-vs-speech"):  # the plots are shown, decoded
        _wait(browser, lambda d: d.execute_script(
            "const i = document.querySelector(arguments[0]); return i && i.complete && i.naturalWidth > 0;",
            f"#{plot} img"))
    assert "Done" in browser.find_element(By.ID, "status").text
    _screenshot(browser, tmp_path / "page.png")


def test_bad_upload_shows_the_error_in_the_page(served, browser, tmp_path):
    url, manager = served
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not a picture")
    _open(browser, url)
    _upload(browser, "reference", broken, lambda d: broken.name in _text_of(d, "reference"))
    _upload(browser, "speech", SPEECH, _has_speech)
    _click(browser, By.ID, "generate")
    # submit's InputError in the page: an error toast and the status box
    message = "broken.png: not a readable image"  # the InputError line, with the user's own file name
    _wait(browser, lambda d: any(message in e.text for e in d.find_elements(  # the error toast (not the warning)
        By.CSS_SELECTOR, "[data-testid=toast-text].error")), 60, "the error message")
    assert message in browser.find_element(By.ID, "status").text
    text = _page_text(browser)
    assert str(manager.work_dir) not in text  # no server paths in the page
    assert not browser.find_elements(By.CSS_SELECTOR, "#result video[src]")
    _screenshot(browser, tmp_path / "bad_upload.png")


def test_example_fills_the_inputs(served, browser):
    _open(browser, served[0])
    _click(browser, By.XPATH, "//*[@id='example']//*[normalize-space(text())='demo_photo.png']")
    _wait(browser, lambda d: PHOTO.name in _text_of(d, "reference"), 30, "the example photo")
    _wait(browser, _has_speech, 30, "the example speech")
