"""What the widget costs a shop's page and a customer, against the standalone chat page in the same
run (the baseline). Run by hand, not in CI:

    .venv/bin/python bench/widget_bench.py [--rounds 5] [--screenshots docs/img]

It starts its own daphne and the scripted fake worker (a fixed 7-word reply, so the model costs
nothing and what is measured is the page, the loader, the frame and the socket) on a scratch SQLite
database and the local Redis under a key prefix of its own, and a host page on another origin
(http://localhost:PORT, the chat on http://127.0.0.1:PORT) that embeds the snippet. Each round is a
new browser context (a new customer), in real headless Chromium (/usr/bin/chromium or CHROMIUM_PATH).

Figures, one per line (medians over the rounds, milliseconds unless named):
  - loader_bytes / loader_gzip_bytes: /widget.js as served, and gzipped;
  - idle_visit_bytes: what a visitor who never opens the chat downloads from us (loader + config);
  - launcher_ms: host page navigation start to the launcher on screen;
  - open_ms: the click on the launcher to the frame's socket connected (first open: token minted);
  - page_ready_ms: the standalone page's navigation start to its socket connected (baseline);
  - first_chunk_ms / complete_ms: Enter to the reply's first text / to the reply finished, widget and page;
  - widget_vs_page_first_chunk: the widget's first chunk over the page's (1.0: no cost).
With ``--screenshots DIR`` it also saves the widget closed and open, desktop and phone
(``widget-{closed,open}-{desktop,phone}.png``).
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUESTION = "Where is my parcel?"
FINISHED = (
    "() => { const b = [...document.querySelectorAll('li.msg.bot')].pop();"
    " return b && b.classList.contains('complete'); }"
)
FIRST_TEXT = (
    "() => { const b = [...document.querySelectorAll('li.msg.bot')].pop();"
    " return b && b.querySelector('.body').textContent.trim().length > 0; }"
)


def setup_django(scratch: Path) -> None:
    prefix = f"bench-widget-{uuid.uuid4().hex[:6]}"
    os.environ.update(
        {
            "DATABASE_URL": f"sqlite:///{scratch / 'bench.sqlite3'}",
            "REDIS_KEY_PREFIX": prefix,
            "CHANNEL_PREFIX": prefix,
            "DJANGO_SETTINGS_MODULE": "chatbot.settings",
            "DJANGO_ALLOW_ASYNC_UNSAFE": "true",  # Playwright's sync API runs a loop in this thread
        }
    )
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def timed(page: Any, expression: str, timeout_ms: int = 60_000) -> float:
    start = time.perf_counter()
    page.wait_for_function(expression, timeout=timeout_ms)
    return (time.perf_counter() - start) * 1000


def chat_round(target: Any) -> tuple[float, float]:
    """Enter on a question, then the ms to the reply's first text and to its end."""
    target.fill("#input", QUESTION)
    start = time.perf_counter()
    target.press("#input", "Enter")
    target.wait_for_function(FIRST_TEXT, timeout=60_000)
    first = (time.perf_counter() - start) * 1000
    target.wait_for_function(FINISHED, timeout=60_000)
    return first, (time.perf_counter() - start) * 1000


def widget_round(browser: Any, host_url: str, site: Any, **context: Any) -> dict[str, float]:
    from tests.widget.test_browser import LAUNCHER, frame_of

    ctx = browser.new_context(**context)
    page = ctx.new_page()
    page.goto(host_url)
    page.locator(LAUNCHER).wait_for()
    launcher = page.evaluate("performance.now()")  # since navigation start
    start = time.perf_counter()
    page.locator(LAUNCHER).click()
    frame = frame_of(page, site)
    frame.wait_for_selector("#connection.online", timeout=60_000)
    opened = (time.perf_counter() - start) * 1000
    first, complete = chat_round(frame)
    ctx.close()
    return {"launcher_ms": launcher, "open_ms": opened, "first_chunk_ms": first, "complete_ms": complete}


def page_round(browser: Any, url: str) -> dict[str, float]:
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(url + "/")
    page.wait_for_selector("#connection.online", timeout=60_000)
    ready = page.evaluate("performance.now()")
    first, complete = chat_round(page)
    ctx.close()
    return {"page_ready_ms": ready, "first_chunk_ms": first, "complete_ms": complete}


def idle_visit_bytes(browser: Any, host_url: str, chat_url: str) -> int:
    """Bytes from our origin for a visitor who never opens the chat (transfer sizes as Chromium saw them)."""
    ctx = browser.new_context()
    page = ctx.new_page()
    sizes: list[int] = []
    page.on(
        "requestfinished",
        lambda request: sizes.append(request.sizes()["responseBodySize"]) if request.url.startswith(chat_url) else None,
    )
    page.goto(host_url)
    page.wait_for_load_state("networkidle")
    ctx.close()
    return sum(sizes)


def screenshots(browser: Any, host_url: str, site: Any, out: Path) -> list[Path]:
    from tests.widget.test_browser import LAUNCHER, frame_of

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for size, viewport in {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}.items():
        phone = size == "phone"
        ctx = browser.new_context(viewport=viewport, is_mobile=phone, has_touch=phone, device_scale_factor=1)
        page = ctx.new_page()
        page.goto(host_url)
        page.locator(LAUNCHER).wait_for()
        page.wait_for_timeout(300)
        written.append(out / f"widget-closed-{size}.png")
        page.screenshot(path=str(written[-1]))
        page.locator(LAUNCHER).click()
        frame = frame_of(page, site)
        frame.wait_for_selector("#connection.online", timeout=60_000)
        chat_round(frame)
        page.mouse.move(0, 0)
        page.wait_for_timeout(300)
        written.append(out / f"widget-open-{size}.png")
        page.screenshot(path=str(written[-1]))
        ctx.close()
    return written


SHOP_HTML = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Acme Outdoor</title>
<style>body{{margin:0;font:16px/1.5 Georgia,serif;color:#222;background:#fbfaf7}}
header{{background:#14532d;color:#fff;padding:1rem 2rem}} main{{padding:2rem;max-width:52rem}}
.card{{border:1px solid #ddd;background:#fff;padding:1rem;margin:1rem 0;border-radius:6px}}</style></head>
<body><header><strong>Acme Outdoor</strong> · Tents · Boots · Jackets</header><main><h1>Trail boots, size 42</h1>
<div class="card">Waterproof leather, 1.2 kg the pair. Free returns within 30 days.</div>
<div class="card">In stock: ships tomorrow.</div></main>
<script src="{chat}/widget.js" data-site="{key}" async></script></body></html>"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--screenshots", type=Path, default=None, help="also save the widget's PNGs here")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="widget-bench-"))
    setup_django(scratch)
    from playwright.sync_api import sync_playwright

    from conversations.models import WidgetSite
    from tests.e2e.browser import CHROMIUM, CHROMIUM_ARGS
    from tests.e2e.live import LiveSystem
    from tests.widget.test_browser import HostPage

    system = LiveSystem(fake=True, prefix=os.environ["REDIS_KEY_PREFIX"])
    shop = HostPage("127.0.0.1")
    host_url = f"http://localhost:{shop.port}/boots"
    site = WidgetSite.objects.create(
        name="Acme Outdoor",
        allowed_origins=[f"http://localhost:{shop.port}"],
        title="Acme help",
        greeting="Hi! Ask us about orders, sizes and returns.",
        brand_colour="#14532d",
    )
    shop.html = SHOP_HTML.format(chat=system.url, key=site.key)
    try:
        with urllib.request.urlopen(system.url + "/widget.js") as response:
            loader = response.read()
        print(f"loader_bytes={len(loader)}")
        print(f"loader_gzip_bytes={len(gzip.compress(loader))}")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            print(f"idle_visit_bytes={idle_visit_bytes(browser, host_url, system.url)}")
            page_round(browser, system.url)  # warm both paths once: static files, first socket
            widget_round(browser, host_url, site)
            pages, widgets = [], []
            for _ in range(args.rounds):  # interleaved: neither path gets the quieter half of the run
                pages.append(page_round(browser, system.url))
                widgets.append(widget_round(browser, host_url, site))
            median = lambda rows, key: statistics.median(row[key] for row in rows)  # noqa: E731
            for key in ("launcher_ms", "open_ms"):
                print(f"widget_{key}={median(widgets, key):.0f}")
            print(f"page_ready_ms={median(pages, 'page_ready_ms'):.0f}")
            for key in ("first_chunk_ms", "complete_ms"):
                print(f"widget_{key}={median(widgets, key):.0f}")
                print(f"page_{key}={median(pages, key):.0f}")
            ratio = median(widgets, "first_chunk_ms") / median(pages, "first_chunk_ms")
            print(f"widget_vs_page_first_chunk={ratio:.2f}")
            if args.screenshots:
                for path in screenshots(browser, host_url, site, args.screenshots):
                    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")
            browser.close()
    finally:
        shop.stop()
        system.stop()


if __name__ == "__main__":
    main()
