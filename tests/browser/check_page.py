"""Opens static pages in Debian's headless Chromium (through chromedriver) and prints, as
JSON, per page: its browser console messages and, per <img>, whether it loaded and its
natural size.

usage: check_page.py PAGE.html [PAGE.html ...]
"""
import json
import os
import sys
import tempfile

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = os.environ.get("PIPE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("PIPE_CHROMEDRIVER", "/usr/bin/chromedriver")


def main(pages):
    os.environ.setdefault("SE_OFFLINE", "true")
    with tempfile.TemporaryDirectory() as profile:
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for arg in [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--window-size=1400,1000",
        ]:
            opts.add_argument(arg)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        try:
            result = []
            for page in pages:
                driver.get("file://" + os.path.abspath(page))
                images = driver.execute_async_script(
                    """
                    const done = arguments[arguments.length - 1];
                    const imgs = Array.from(document.images);
                    Promise.all(imgs.map(i => i.decode().then(() => true, () => false)))
                      .then(ok => done(imgs.map((i, k) => ({
                        src: i.getAttribute('src'), decoded: ok[k], complete: i.complete,
                        width: i.naturalWidth, height: i.naturalHeight}))));
                    """
                )
                logs = [
                    {"level": e["level"], "message": e["message"]}
                    for e in driver.get_log("browser")
                ]
                result.append({"page": page, "title": driver.title, "images": images, "console": logs})
            print(json.dumps(result))
        finally:
            driver.quit()


if __name__ == "__main__":
    main(sys.argv[1:])
