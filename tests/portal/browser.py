"""The customer portal in a real headless browser (Debian's Chromium driven by Playwright).

Run by `tests/it/portal.rs` against a running `webhook-hub serve` (HUB_URL, HUB_API_KEY for
the platform's own calls, test hooks on). It starts its own receivers, then walks the portal as a
customer would: mint a session, create an endpoint through the form (its confirmation arrives),
see a published event delivered, see a failing endpoint's failures, recover them, reveal and
rotate the secret, pause and resume, send a test event; a second owner's session sees none of it,
an expired session is refused with a clear message. axe-core (vendored) checks every screen for
serious accessibility violations. Screenshots go to PORTAL_SCREENSHOTS.
"""

import json
import os
import pathlib
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from playwright.sync_api import expect, sync_playwright

HUB = os.environ["HUB_URL"]
KEY = os.environ["HUB_API_KEY"]
SHOTS = pathlib.Path(os.environ["PORTAL_SCREENSHOTS"])
CHROMIUM = os.environ.get("PORTAL_CHROMIUM", "/usr/bin/chromium")
AXE = (pathlib.Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js").read_text()
WAIT = 30_000  # ms


def step(text):
    print(f"portal: {text}", flush=True)


def api(method, path, body=None, token=KEY):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(HUB + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            text = res.read()
            return res.status, (json.loads(text) if text else None)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


class Receivers:
    """Endpoints on loopback: each path records what it gets; a path in `failing` answers 500
    to events. Confirmation messages are confirmed (the link is followed) and answered 200."""

    def __init__(self):
        self.got = {}
        self.failing = set()
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.got.setdefault(self.path, []).append(body)
                    failing = self.path in outer.failing
                if body.get("type") == "Confirmation":
                    threading.Thread(
                        target=urllib.request.urlopen, args=(body["confirmation_url"],), daemon=True
                    ).start()
                    failing = False
                self.send_response(500 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def events(self, path):
        with self.lock:
            return [b for b in self.got.get(path, []) if b.get("type") != "Confirmation"]

    def wait_for(self, path, predicate, what):
        deadline = time.time() + WAIT / 1000
        while time.time() < deadline:
            if any(predicate(b) for b in self.events(path)):
                return
            time.sleep(0.1)
        raise AssertionError(f"{path} never received {what}; got {self.events(path)}")


def mint(owner, topics, expires_in=3600, access="write"):
    status, body = api(
        "POST",
        "/v1/portal/sessions",
        {"owner": owner, "topics": topics, "expires_in": expires_in, "access": access},
    )
    assert status == 201, (status, body)
    return body


def axe_check(page, screen):
    page.evaluate(AXE + "\n;0")
    result = page.evaluate(
        "async () => await axe.run(document, {resultTypes: ['violations']})"
    )
    bad = [v for v in result["violations"] if v["impact"] in ("serious", "critical")]
    minor = [f"{v['id']} ({v['impact']})" for v in result["violations"] if v not in bad]
    step(f"axe on {screen}: {len(bad)} serious or critical, minor: {minor or 'none'}")
    assert not bad, json.dumps(
        [{"id": v["id"], "impact": v["impact"], "nodes": [n["html"] for n in v["nodes"]]} for v in bad],
        indent=1,
    )


def shot(page, name):
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def reload_until(page, locator, what):
    """Clicks the deliveries' Reload until `locator` shows (the page does not poll by itself)."""
    deadline = time.time() + WAIT / 1000
    while time.time() < deadline:
        if locator.count() > 0:
            return
        page.get_by_role("button", name="Reload").click()
        page.wait_for_timeout(300)
    raise AssertionError(f"never shown: {what}")


def wait_exhausted(sub_id, event_id):
    """Waits until every attempt of the (short) schedule failed: the last one records no next."""
    deadline = time.time() + WAIT / 1000
    while True:
        _, log = api("GET", f"/v1/subscriptions/{sub_id}/deliveries")
        tries = [a for a in log["data"] if a["message_id"] == event_id]
        last = max(tries, key=lambda a: a["attempt"]) if tries else None
        if last and not last["delivered"] and last["next_attempt_at"] is None:
            return
        assert time.time() < deadline, f"{event_id} never ran out of retries: {tries}"
        time.sleep(0.2)


def main():
    SHOTS.mkdir(parents=True, exist_ok=True)
    receivers = Receivers()
    ok_url = f"{receivers.base}/orders"
    failing_url = f"{receivers.base}/flaky"
    receivers.failing.add("/flaky")

    alice = mint("alice@example.com", ["door.*"])
    bob = mint("bob@example.com", ["door.*"])
    short = mint("alice@example.com", ["door.*"], expires_in=60)
    assert alice["url"].startswith(f"{HUB}/portal#session=whpt_"), alice["url"]

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
            ],
        )
        context = browser.new_context(viewport={"width": 1100, "height": 800})
        page = context.new_page()
        page.on("dialog", lambda d: d.accept())
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        # Script errors and failed page loads count; the API's own 4xx answers (a form error
        # shown on purpose) are what the page handles, and Chromium logs each as a console error.
        page.on("console", lambda m: m.type == "error" and "Failed to load resource" not in m.text
                and errors.append(m.text))
        page.on("response", lambda r: r.status >= 400 and "/portal/api/" not in r.url
                and errors.append(f"{r.status} {r.url}"))

        step("the session opens the portal; the token leaves the address bar")
        page.goto(alice["url"])
        expect(page.get_by_role("heading", name="Your webhook endpoints")).to_be_visible()
        assert "session=" not in page.url, page.url
        expect(page.locator("#who")).to_contain_text("alice@example.com")
        axe_check(page, "empty list")

        step("keyboard: Tab reaches Add endpoint, Enter opens the form")
        page.locator("body").focus()
        for _ in range(6):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.textContent") == "Add endpoint":
                break
        assert page.evaluate("document.activeElement.textContent") == "Add endpoint"
        page.keyboard.press("Enter")
        expect(page.get_by_role("heading", name="Add an endpoint")).to_be_visible()

        step("the form shows the API's validation message beside the field")
        page.get_by_label("Endpoint URL").fill("ftp://example.com/hook")
        page.get_by_role("checkbox", name="door.*").check()
        page.get_by_role("button", name="Add endpoint").click()
        error = page.locator("#callback_url-error")
        expect(error).not_to_be_empty()
        _, direct = api("POST", "/v1/subscriptions", {"callback_url": "ftp://example.com/hook", "topic": "door.opened"})
        expect(error).to_have_text(direct["message"])
        assert page.get_by_label("Endpoint URL").get_attribute("aria-invalid") == "true"
        axe_check(page, "form with an error")
        shot(page, "form")

        step("an endpoint is created through the form; its confirmation arrives and confirms it")
        page.get_by_label("Endpoint URL").fill(ok_url)
        page.get_by_label("Name").fill("Orders service")
        page.get_by_role("button", name="Add endpoint").click()
        expect(page.get_by_role("heading", name="Orders service")).to_be_visible()
        expect(page.locator("#secret-value")).to_contain_text("whsec_")
        deadline = time.time() + WAIT / 1000
        while not any(b.get("type") == "Confirmation" for b in receivers.got.get("/orders", [])):
            assert time.time() < deadline, "no confirmation reached the receiver"
            time.sleep(0.1)
        _, listed = api("GET", "/v1/subscriptions")
        orders = next(s for s in listed["data"] if s["callback_url"] == ok_url)
        assert orders["owner"] == "alice@example.com", orders
        deadline = time.time() + WAIT / 1000
        while api("GET", f"/v1/subscriptions/{orders['id']}")[1]["status"] != "active":
            assert time.time() < deadline, "never confirmed"
            time.sleep(0.1)

        assert orders["bound"] is True, orders

        step("an event the platform publishes for this customer appears in the deliveries list")
        status, published = api("POST", "/v1/events", {"topic": "door.opened", "data": {"door": 7},
                                                         "owner": "alice@example.com"})
        assert status == 202, published
        receivers.wait_for("/orders", lambda b: b.get("id") == published["id"], published["id"])
        row = page.locator("#deliveries tr", has_text=published["id"])
        reload_until(page, row, f"the delivery of {published['id']}")
        expect(row.locator(".badge")).to_have_text("delivered")
        expect(row).to_contain_text("200")
        expect(page.get_by_role("heading", name="Orders service").locator("..").locator(".badge")).to_have_text("active")

        step("the message log shows the event's body as delivered; a delivered event is resent from it")
        message = page.locator(f"#messages tr[data-event='{published['id']}']")
        expect(message).to_be_visible()
        expect(message).to_contain_text("door.opened")
        page.get_by_role("button", name=f"Show {published['id']}").click()
        body = page.get_by_label(f"Body of {published['id']}")
        expect(body).to_contain_text('"door": 7')
        expect(body).to_contain_text(f'"subscription_id": "{orders["id"]}"')
        expect(page.locator(".message-detail")).to_contain_text("delivered (200)")
        page.get_by_role("button", name=f"Resend message {published['id']}").click()
        expect(page.locator("#notice")).to_contain_text(f"Message {published['id']} queued again")
        deadline = time.time() + WAIT / 1000
        while sum(1 for b in receivers.events("/orders") if b.get("id") == published["id"]) < 2:
            assert time.time() < deadline, "the resent message never arrived again"
            time.sleep(0.1)
        axe_check(page, "message log")
        shot(page, "messages")
        page.get_by_label("Event id or topic").fill(published["id"])
        page.get_by_role("button", name="Search").click()
        expect(page.locator("#messages tbody tr")).to_have_count(1)
        page.get_by_label("Event id or topic").fill("window.*")
        page.get_by_role("button", name="Search").click()
        expect(page.locator("#messages-results")).to_contain_text("No messages yet.")
        page.get_by_label("Event id or topic").fill("door.*")
        page.get_by_role("button", name="Search").click()
        expect(page.locator("#messages tbody tr")).to_have_count(1)
        expect(page.locator("#messages-results")).not_to_contain_text("null")

        step("reveal and rotate the secret")
        expect(page.locator("#secret-value")).not_to_contain_text("whsec_")
        page.get_by_role("button", name="Reveal").click()
        expect(page.locator("#secret-value")).to_contain_text("whsec_")
        before = page.locator("#secret-value").inner_text()
        page.get_by_role("button", name="Rotate").click()
        expect(page.locator("#notice")).to_contain_text("Rotated")
        after = page.locator("#secret-value").inner_text()
        assert after.startswith("whsec_") and after != before, (before, after)

        step("send a test event")
        page.get_by_role("button", name="Send test event").click()
        expect(page.locator("#notice")).to_contain_text("Test event")
        receivers.wait_for("/orders", lambda b: b.get("type") == "hub.test", "the test event")
        test_id = next(b["id"] for b in receivers.events("/orders") if b.get("type") == "hub.test")
        reload_until(page, page.locator("#deliveries tr", has_text=test_id), "the test event's delivery")
        axe_check(page, "endpoint")
        shot(page, "endpoint")

        step("pause and resume")
        page.get_by_role("button", name="Pause").click()
        expect(page.get_by_role("button", name="Resume")).to_be_visible()
        expect(page.locator("h2 + .badge")).to_have_text("paused")
        page.get_by_role("button", name="Resume").click()
        expect(page.get_by_role("button", name="Pause")).to_be_visible()
        expect(page.locator("h2 + .badge")).to_have_text("active")

        step("a failing endpoint's failures are shown, then recovered")
        page.get_by_role("link", name="← All endpoints").click()
        page.get_by_role("button", name="Add endpoint").click()
        page.get_by_label("Endpoint URL").fill(failing_url)
        page.get_by_role("checkbox", name="door.*").check()
        page.get_by_role("button", name="Add endpoint").click()
        expect(page.locator("h2", has_text=failing_url)).to_be_visible()
        flaky_id = None
        deadline = time.time() + WAIT / 1000
        while flaky_id is None:
            _, listed = api("GET", "/v1/subscriptions")
            flaky = [s for s in listed["data"] if s["callback_url"] == failing_url and s["status"] == "active"]
            flaky_id = flaky[0]["id"] if flaky else None
            assert flaky_id or time.time() < deadline, "the failing endpoint was never confirmed"
            time.sleep(0.1)
        status, failed_event = api("POST", "/v1/events", {"topic": "door.forced", "data": {"door": 9},
                                                            "owner": "alice@example.com"})
        assert status == 202
        wait_exhausted(flaky_id, failed_event["id"])
        failed_rows = page.locator("#deliveries tr.failed", has_text=failed_event["id"])
        reload_until(page, failed_rows, "the failed attempts")
        expect(failed_rows.first.locator(".badge")).to_have_text("failed")
        expect(failed_rows.first).to_contain_text("500")
        axe_check(page, "failures")
        shot(page, "failures")

        step("resend one failed delivery once the endpoint is mended")
        receivers.failing.discard("/flaky")
        page.get_by_role("button", name=f"Resend {failed_event['id']}").click()
        expect(page.locator("#notice")).to_contain_text(f"Delivery {failed_event['id']} queued again")
        receivers.wait_for("/flaky", lambda b: b.get("id") == failed_event["id"], "the resent delivery")
        delivered = page.locator("#deliveries tr:not(.failed)", has_text=failed_event["id"])
        reload_until(page, delivered, "the resent delivery")
        expect(delivered.locator(".badge")).to_have_text("delivered")

        step("recover every failed delivery since a time")
        receivers.failing.add("/flaky")
        status, second = api("POST", "/v1/events", {"topic": "door.forced", "data": {"door": 10},
                                                      "owner": "alice@example.com"})
        assert status == 202
        wait_exhausted(flaky_id, second["id"])
        receivers.failing.discard("/flaky")
        page.get_by_role("button", name="Recover").click()
        expect(page.locator("#notice")).to_contain_text("Recovered: 1 delivery queued again")
        receivers.wait_for("/flaky", lambda b: b.get("id") == second["id"], "the recovered delivery")
        recovered = page.locator("#deliveries tr:not(.failed)", has_text=second["id"])
        reload_until(page, recovered, "the recovered delivery")
        expect(recovered.locator(".badge")).to_have_text("delivered")

        step("the list shows both, with status and lease; a phone-sized screen stacks them")
        page.get_by_role("link", name="← All endpoints").click()
        expect(page.locator("#subscriptions tbody tr")).to_have_count(2)
        page.get_by_role("button", name="Refresh the lease of Orders service").click()
        expect(page.locator("#notice")).to_contain_text("Lease refreshed")
        axe_check(page, "list")
        shot(page, "list")
        phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
        small = phone.new_page()
        small.goto(alice["url"])
        expect(small.locator("#subscriptions tbody tr")).to_have_count(2)
        width = small.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the list overflows a phone screen: {width}px"
        shot(small, "phone")
        phone.close()

        step("another owner's session sees none of it")
        other = browser.new_context()
        bobs = other.new_page()
        bobs.goto(bob["url"])
        expect(bobs.get_by_text("No endpoints yet.")).to_be_visible()
        status, body = api("GET", f"/portal/api/v1/subscriptions/{orders['id']}", token=bob["token"])
        assert (status, body["code"]) == (404, "not_found"), (status, body)
        status, body = api("GET", "/portal/api/v1/subscriptions", token=KEY)
        assert (status, body["code"]) == (401, "invalid_session"), (status, body)
        other.close()

        step("a platform's theme colours the page; ?theme=dark switches to the dark palette")
        status, themed = api("POST", "/v1/portal/sessions", {"owner": "carol", "theme": {"accent": "#6a1b9a"}})
        assert status == 201, themed
        look = browser.new_context().new_page()
        look.goto(themed["url"])
        expect(look.get_by_role("heading", name="Your webhook endpoints")).to_be_visible()
        accent = look.evaluate("getComputedStyle(document.documentElement).getPropertyValue('--accent').trim()")
        assert accent == "#6a1b9a", accent
        button = look.evaluate("getComputedStyle(document.querySelector('button.primary')).backgroundColor")
        assert button == "rgb(106, 27, 154)", button
        axe_check(look, "themed")
        look.context.close()
        dark = browser.new_context().new_page()
        dark.goto(alice["url"].replace("/portal#", "/portal?theme=dark#"))
        expect(dark.locator("#subscriptions tbody tr")).to_have_count(2)
        background = dark.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(17, 20, 24)", background
        axe_check(dark, "dark theme")
        shot(dark, "dark")
        dark.context.close()

        step("the catalog: the types the session may subscribe to, with description and example; subscribe from it")
        door_schema = {"type": "object", "required": ["door"],
                       "properties": {"door": {"type": "integer"}, "by": {"type": "string"}}}
        for topic, body in [
            ("door.opened", {"description": "A door was opened.", "schema": door_schema,
                             "examples": [{"door": 7, "by": "badge 12"}]}),
            ("door.legacy", {"description": "The old door event.", "deprecated": True, "examples": [{"door": 1}]}),
            ("billing.paid", {"description": "Outside this session's topics.", "examples": [{"amount": 1}]}),
        ]:
            status, declared = api("PUT", f"/v1/event-types/{topic}", body)
            assert status == 200, declared
        cat = browser.new_context().new_page()
        cat.on("pageerror", lambda e: errors.append(str(e)))
        cat.goto(alice["url"])
        cat.get_by_role("button", name="Event types").click()
        expect(cat.get_by_role("heading", name="Event types")).to_be_visible()
        expect(cat.locator(".event-type")).to_have_count(2)
        opened = cat.locator(".event-type[data-topic='door.opened']")
        expect(opened).to_contain_text("A door was opened.")
        expect(opened.get_by_label("Example payload of door.opened")).to_contain_text('"by": "badge 12"')
        expect(cat.locator(".event-type[data-topic='door.legacy'] .badge.deprecated")).to_have_text("deprecated")
        axe_check(cat, "catalog")
        shot(cat, "catalog")
        cat.get_by_role("button", name="Subscribe to door.opened").click()
        expect(cat.get_by_role("heading", name="Add an endpoint")).to_be_visible()
        expect(cat.get_by_role("checkbox", name="door.opened")).to_be_checked()
        expect(cat.locator(".catalog-choice[data-topic='door.opened']")).to_contain_text("A door was opened.")
        expect(cat.locator(".catalog-choice[data-topic='door.legacy']")).to_contain_text("deprecated")
        expect(cat.locator(".catalog-choice[data-topic='billing.paid']")).to_have_count(0)
        axe_check(cat, "picker")
        catalog_url = f"{receivers.base}/catalog"
        cat.get_by_label("Endpoint URL").fill(catalog_url)
        cat.get_by_role("button", name="Add endpoint").click()
        expect(cat.locator("h2", has_text=catalog_url)).to_be_visible()
        _, listed = api("GET", "/v1/subscriptions")
        from_catalog = next(s for s in listed["data"] if s["callback_url"] == catalog_url)
        assert from_catalog["topics"] == ["door.opened"], from_catalog
        cat.context.close()

        step("an expired session is refused with a clear message")
        status, _ = api("POST", "/_test/clock/advance?ms=61000")
        assert status == 200
        late = browser.new_context().new_page()
        late.goto(short["url"])
        expect(late.get_by_role("alert")).to_contain_text("Your session has expired")
        axe_check(late, "expired")
        shot(late, "expired")

        assert not errors, f"the page logged errors: {errors}"
        browser.close()
    step("done")


if __name__ == "__main__":
    try:
        main()
    except Exception:
        import traceback

        traceback.print_exc()
        sys.exit(1)
