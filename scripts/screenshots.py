"""Screenshots of the ranking screen, regenerated from the real app in headless Chromium.

    python scripts/screenshots.py            # writes docs/screenshots/*.png and prints a table

A fresh SQLite database, the app served on a free port, one labeler, and two ranking batches: K = 9
under a 10,000-character prompt, and K = 5 of ordinary length. Shots at 1280x800 and at 390x844
(touch). The table measures what the issue asks: where the first response starts, and whether
each response card (its text, rank badge, rank buttons and rating) fits in one screen, i.e. a
labeler reads and ranks a response without scrolling between the two.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.config import Settings  # noqa: E402
from app.db import make_engine, make_sessionmaker, unit_of_work  # noqa: E402
from app.labeling import batches  # noqa: E402
from app.labeling.models import TaskKind  # noqa: E402
from app.main import create_app  # noqa: E402
from app.migrate import upgrade  # noqa: E402
from app.prompts import service as prompts  # noqa: E402
from tests.factories import PASSWORD, make_prompts, make_user  # noqa: E402
from tests.live_server import serving  # noqa: E402

OUT = ROOT / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"

PARAGRAPH = ("Our support team receives long messages from customers who describe a problem with their order, their "
             "account and the delivery in one go. Below is one such message, followed by our internal notes. ")


def long_prompt(chars: int = 10_000) -> str:
    head = "Summarise the customer's message below for a support agent, in at most five bullet points.\n\n"
    body = []
    n = 0
    while len(head) + sum(len(p) + 2 for p in body) < chars:
        n += 1
        body.append(f"Paragraph {n}. " + PARAGRAPH * 2)
    return (head + "\n\n".join(body))[:chars]


RESPONSES = [
    "- The parcel arrived **late** (ordered on the 2nd, delivered on the 11th).\n- One item was damaged.\n"
    "- The customer was charged twice.\n- They want a refund for the damaged item.\n- They ask for a call back.",
    "The customer is unhappy with a late, partly damaged delivery and a double charge; they want a refund and a call.",
    "1. Late delivery\n2. Damaged item\n3. Double charge\n\nSuggested reply:\n\n```text\nDear customer, we are sorry ...\n```",
    "I cannot summarise this message.",
    "Summary: delivery problems. The agent should check the order history and the payment provider's log, then "
    "call the customer back today; offer a refund for the damaged item and reverse the second charge.",
    "- Late parcel\n- Damaged item\n- Charged twice\n- Wants: refund, call back\n- Tone: polite but firm",
    "The message mentions an order, an account and a delivery. It is long.",
    "**Action items**\n\n- Refund the damaged item\n- Reverse the duplicate charge\n- Call the customer",
    "Customer reports late delivery, damage and a duplicate charge, asks for a refund and a call.",
]


def seed(factory) -> str:
    settings = Settings(mode="test", secret_key="screens-Vq8nR2kX7pL4wT9zB3mH6sJ1dF5gC0yE")
    with unit_of_work(factory) as db:
        user = make_user(db, "labeler", username="screens")
        for name, text, k, priority in [("k9-long", long_prompt(), 9, 10), ("k5-ordinary", "Summarise this customer's "
                                        "message for a support agent in at most five bullet points: my parcel came a "
                                        "week late, one mug was broken and I was charged twice.", 5, 5)]:
            (p,) = make_prompts(db, [text])
            prompts.import_completions(db, [{"prompt_id": p.id, "completion": RESPONSES[j], "model": f"m{j}"}
                                            for j in range(k)], settings=settings)
            batches.create_batch(db, batches.BatchOptions(name=name, kind=TaskKind.ranking, k=k, priority=priority),
                                 prompt_ids=[p.id])
        return user.username


def measure(page, label: str) -> dict:
    cards = page.locator("article.response")
    heights = [cards.nth(i).bounding_box()["height"] for i in range(cards.count())]
    return {
        "screen": label, "K": cards.count(),
        "prompt chars": page.get_attribute("#prompt-text", "data-chars"),
        "first response at px": round(cards.first.bounding_box()["y"] + page.evaluate("window.scrollY")),
        "tallest card px": round(max(heights)),
        "every card fits one screen": all(h <= page.viewport_size["height"] for h in heights),
    }


def shoot(page, name: str) -> None:
    page.screenshot(path=str(OUT / name))


def main() -> None:
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/screens.sqlite3"
        upgrade(url)
        engine = make_engine(url)
        settings = Settings(mode="test", database_url=url, secret_key="screens-Vq8nR2kX7pL4wT9zB3mH6sJ1dF5gC0yE",
                            artifact_dir=Path(tmp) / "artifacts")
        username = seed(make_sessionmaker(engine))
        with serving(create_app(settings, engine=engine)) as base, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
            for size, touch in [((390, 844), True), ((1280, 800), False)]:  # the phone first: the desktop pass skips the K = 9 task
                ctx = browser.new_context(viewport={"width": size[0], "height": size[1]}, has_touch=touch, is_mobile=touch)
                page = ctx.new_page()
                page.goto(f"{base}/login")
                page.fill("input[name=username]", username)
                page.fill("input[name=password]", PASSWORD)
                page.click("button[type=submit]")
                page.wait_for_url(f"{base}/")
                page.click("#next-ranking")
                page.wait_for_selector("html[data-labeling-ready] #board")
                tag = f"{size[0]}x{size[1]}"
                rows.append(measure(page, f"{tag} long prompt"))
                shoot(page, f"ranking-{tag}-k9-top.png")
                tap = page.tap if touch else page.click
                for letter, place in [("A", "new"), ("H", "new"), ("F", "1")]:
                    tap(f"#place-{letter}-{place}")
                for letter, v in zip("AHF", "767"):
                    tap(f"#response-{letter} label.likert-option:nth-of-type({v}) span")
                tap("#chip-B")
                page.locator("#buckets").scroll_into_view_if_needed()
                page.evaluate("window.scrollTo(0, document.getElementById('board').getBoundingClientRect().top + window.scrollY - 8)")
                shoot(page, f"ranking-{tag}-k9-ranking.png")
                if not touch:  # the ordinary K = 5 task, after skipping the long one with a reason
                    page.evaluate("window.scrollTo(0, 0)")
                    page.locator("#skip-details summary").click()
                    page.select_option("#skip-reason", "cannot_judge")
                    page.click("#skip")
                    page.click("#next-task")
                    page.wait_for_selector("html[data-labeling-ready] #board")
                    rows.append(measure(page, f"{tag} K=5 ordinary"))
                    shoot(page, f"ranking-{tag}-k5.png")
                ctx.close()
            browser.close()
        engine.dispose()
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    for png in sorted(OUT.glob("ranking-*.png")):
        print(f"{png.relative_to(ROOT)}: {png.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
