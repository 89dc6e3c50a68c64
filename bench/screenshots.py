"""PNGs of a chat page: desktop (1280x800) and phone (390x844), light and dark.

    python bench/screenshots.py URL NAME [--message TEXT] [--out docs/img]

writes ``<out>/<NAME>-desktop-light.png``, ``-desktop-dark``, ``-phone-light`` and ``-phone-dark``.
With ``--message`` each shot's page (a new customer each) sends it first and waits for the reply.
The lead's widget shots use the same script with the widget's demo page as URL. Chromium is
Debian's (/usr/bin/chromium, or CHROMIUM_PATH), driven by Playwright; each PNG should stay under
200 KB (docs/img is in git). The chat's browser tests run it too (CHAT_SCREENSHOTS=1,
tests/e2e/test_browser_chat_ux.py) against a live system with the fake worker.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

SIZES = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
SCHEMES = ("light", "dark")


def shoot(browser: Any, url: str, name: str, out: Path, *, message: str | None = None) -> list[Path]:
    """The four shots of ``url``; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for size, viewport in SIZES.items():
        phone = size == "phone"
        for scheme in SCHEMES:
            context = browser.new_context(
                viewport=viewport, color_scheme=scheme, is_mobile=phone, has_touch=phone, device_scale_factor=1
            )
            page = context.new_page()
            page.goto(url)
            page.wait_for_load_state("networkidle")
            if message and page.locator("#input").count():
                page.wait_for_selector("#connection.online")
                page.fill("#input", message)
                page.keyboard.press("Enter")
                page.wait_for_selector("li.msg.bot.complete", timeout=60_000)
                page.mouse.move(0, 0)
            path = out / f"{name}-{size}-{scheme}.png"
            page.screenshot(path=str(path))
            written.append(path)
            context.close()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url")
    parser.add_argument("name")
    parser.add_argument("--message", default=None)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "img")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"), args=["--no-sandbox", "--disable-gpu"]
        )
        for path in shoot(browser, args.url, args.name, args.out, message=args.message):
            print(path, path.stat().st_size)
        browser.close()


if __name__ == "__main__":
    main()
