"""Take screenshots of RLHF Studio's main pages in headless Chromium.

Usage:
    .venv/bin/python scripts/screenshots.py [BASE_URL] [OUT_DIR]

BASE_URL defaults to http://127.0.0.1:8000 (a server started by ``make run``, with the demo
seeded) and OUT_DIR to test-artifacts/screenshots. It uses Debian's Chromium
(``apt-get install chromium``), not a browser downloaded by Playwright.

Every page is taken at desktop size (1280x800) and at phone size (390x844). Console errors,
Content-Security-Policy violations included, are printed; the exit status is 1 if there were any.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORTS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
LABELER = ("labeler1@demo.local", "demo-labeler")
ADMIN = ("admin@demo.local", "demo-admin")


def log_in(page: Page, base: str, email: str, password: str) -> None:
    """Fill the real login form (it carries the hidden csrf_token) and submit it."""
    page.goto(f"{base}/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")


def log_out(page: Page) -> None:
    page.click("form[action='/logout'] button")
    page.wait_for_url("**/login")


def shoot(page: Page, out: Path, name: str) -> None:
    path = out / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"wrote {path}")


def run_viewport(browser: Browser, base: str, out: Path, size: str, errors: list[str]) -> None:
    """One fresh browser context (no cookies) per viewport, through the whole tour."""
    context = browser.new_context(viewport=VIEWPORTS[size], device_scale_factor=1)
    page = context.new_page()

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            errors.append(f"[{size}] {page.url}: {msg.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(f"[{size}] {page.url}: {exc}"))

    page.goto(f"{base}/login")
    shoot(page, out, f"login-{size}")

    log_in(page, base, *LABELER)
    page.goto(f"{base}/home")
    shoot(page, out, f"labeler-home-{size}")
    log_out(page)

    log_in(page, base, *ADMIN)
    page.goto(f"{base}/admin")
    shoot(page, out, f"admin-home-{size}")
    page.goto(f"{base}/admin/jobs")
    shoot(page, out, f"admin-jobs-{size}")

    page.goto(f"{base}/admin")
    page.get_by_role("button", name="Run a worker self-check").click()
    page.wait_for_url("**/admin/jobs/*")
    # The job page polls itself with htmx every 2 s until the job is finished.
    page.locator("#job-status").get_by_text("succeeded", exact=True).wait_for(timeout=120_000)
    page.wait_for_load_state("networkidle")
    shoot(page, out, f"job-detail-{size}")
    context.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base_url", nargs="?", default="http://127.0.0.1:8000")
    parser.add_argument("out_dir", nargs="?", default="test-artifacts/screenshots", type=Path)
    args = parser.parse_args()
    base = args.base_url.rstrip("/")
    args.out_dir.mkdir(parents=True, exist_ok=True)

    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for size in VIEWPORTS:
                run_viewport(browser, base, args.out_dir, size, errors)
        finally:
            browser.close()

    for error in errors:
        print(f"console error: {error}")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
