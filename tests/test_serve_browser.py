"""The web page of faceembed serve in a real browser: headless Debian chromium driven by selenium against a real
server on 127.0.0.1. Paste a key, upload an LFW photo, see the named box drawn; enroll from the page and see the
subject listed with its thumbnail. Skipped with the reason when chromium, chromedriver or selenium is absent."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

LFW = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lfw" / "images"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

pytestmark = [pytest.mark.browser, pytest.mark.realdata]


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not Path(path).is_file():
            return f"{path} not found (apt-get install {package})"
    if not LFW.is_dir():
        return "../shared/data/lfw not found: real-data test skipped"
    return None


@pytest.fixture(scope="module")
def browser():
    why = _missing()
    if why:
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from faceembed.faces.collection import Collection
    from faceembed.serve.process import ServerProcess

    if _missing():
        pytest.skip(_missing())
    folder = tmp_path_factory.mktemp("browser")
    db = f"sqlite:///{folder / 'faces.db'}"
    col, key = Collection.create(db, "page")
    col.enroll("Aaron_Peirsol", str(LFW / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg"))
    col.close()
    with ServerProcess(db, log=folder / "serve.log") as srv:
        yield srv, key


def _wait(driver, condition, timeout: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def _paste_key(driver, url: str, key: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url + "/")
    field = driver.find_element(By.ID, "key")
    field.clear()
    field.send_keys(key)
    driver.find_element(By.ID, "save-key").click()


def _upload(driver, photo: Path) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "file").send_keys(str(photo))


def test_recognize_draws_a_named_box(browser, server):
    from selenium.webdriver.common.by import By

    srv, key = server
    _paste_key(browser, srv.url, key)
    assert browser.execute_script("return localStorage.getItem('faceembed-key')") == key
    _upload(browser, LFW / "Aaron_Peirsol" / "Aaron_Peirsol_0002.jpg")
    canvas = browser.find_element(By.ID, "canvas")
    _wait(browser, lambda d: canvas.get_attribute("data-faces"))
    assert canvas.get_attribute("data-faces") == '["Aaron_Peirsol"]'
    assert "Aaron_Peirsol" in browser.find_element(By.ID, "faces").text
    # the box is drawn in green (a named face) on the canvas: count the box colour's pixels
    green = browser.execute_script("""
        const c = document.getElementById('canvas'), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] === 0x11 && d[i+1] === 0xaa && d[i+2] === 0x44) n++;
        return n;""")
    assert green > 100


def test_enroll_from_the_page(browser, server):
    from selenium.webdriver.common.by import By

    srv, key = server
    _paste_key(browser, srv.url, key)
    _upload(browser, LFW / "Amelie_Mauresmo" / "Amelie_Mauresmo_0001.jpg")
    canvas = browser.find_element(By.ID, "canvas")
    _wait(browser, lambda d: canvas.get_attribute("data-faces") == "[null]")  # not enrolled yet: unknown
    browser.find_element(By.ID, "enroll-name").send_keys("Amelie")
    browser.find_element(By.ID, "enroll").click()
    _wait(browser, lambda d: canvas.get_attribute("data-faces") == '["Amelie"]')
    item = _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '#subjects li[data-subject="Amelie"]'))[0]
    img = item.find_element(By.TAG_NAME, "img")
    _wait(browser, lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img))
    assert "Amelie (1)" in item.text
