#!/usr/bin/env python3
"""Loads the broker dashboard in headless Chromium and reports what it rendered, as one JSON line.

    dashboard_browser.py URL [--transfer GROUP NODE] [--screenshot FILE] [--timeout SECONDS]

Chromium (Debian's package) is driven over the DevTools protocol on a pipe (--remote-debugging-pipe:
the browser reads commands on fd 3 and writes answers on fd 4, each a JSON text ended by a NUL), so
nothing but the Python standard library is needed. The page is read as a user sees it: the rendered
DOM after the page's own script has fetched /api/overview, not the API itself.

--transfer clicks GROUP's "make leader" button of NODE twice (the button arms on the first click and
sends on the second) and waits until the page shows NODE as GROUP's leader.
Exit status 0 when everything asked for happened; 1 with a message on stderr otherwise.
"""
import argparse
import base64
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time

# What the page shows, read from the DOM (the page marks its parts with data- attributes).
EXTRACT = r"""
(() => {
  const text = (e) => e ? e.textContent.trim() : null;
  const groups = [...document.querySelectorAll("[data-group]")].map(g => ({
    group: g.dataset.group, leader: g.dataset.leader || null, heading: text(g.querySelector("h3")),
    members: [...g.querySelectorAll("tr[data-node]")].map(r => ({
      node: r.dataset.node, role: r.dataset.role,
      lag: r.querySelector("[data-lag]") && r.querySelector("[data-lag]").dataset.lag !== "" ? Number(r.querySelector("[data-lag]").dataset.lag) : null,
      transferButton: !!r.querySelector("button[data-transfer]"),
      cells: [...r.querySelectorAll("td")].map(c => c.textContent.trim()) })) }));
  const topics = [...document.querySelectorAll("tr[data-topic]")].map(r => ({
    topic: r.dataset.topic, messages: Number(r.querySelector("[data-messages]").dataset.messages),
    queues: Number(r.querySelectorAll("td")[1].textContent) }));
  const consumers = [...document.querySelectorAll("tr[data-consumer-group]")].map(r => ({
    group: r.dataset.consumerGroup, lag: r.querySelector("[data-lag]").dataset.lag === "" ? null : Number(r.querySelector("[data-lag]").dataset.lag),
    online: r.querySelectorAll("td")[1].textContent.trim() }));
  const nameservers = [...document.querySelectorAll("[data-nameserver]")].map(n => ({ addr: n.dataset.nameserver, ok: n.dataset.ok === "true" }));
  return JSON.stringify({ title: document.title, loaded: document.body.dataset.loaded === "true",
                          live: text(document.getElementById("updated")), groups, topics, consumers, nameservers,
                          banners: [...document.querySelectorAll(".banner")].map(text),
                          toast: text(document.getElementById("toast")) });
})()
"""


class Browser:
    def __init__(self, chromium, width, height):
        self.profile = tempfile.mkdtemp(prefix="raftmq-chromium-")
        to_browser_r, self.to_browser = os.pipe()
        self.from_browser, from_browser_w = os.pipe()

        def child_fds():
            # Through high numbers first: either pipe end may itself be 3 or 4.
            r, w = os.dup(to_browser_r) + 100, os.dup(from_browser_w) + 100
            os.dup2(to_browser_r, r)
            os.dup2(from_browser_w, w)
            os.dup2(r, 3)
            os.dup2(w, 4)

        self.proc = subprocess.Popen(
            [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--no-default-browser-check", "--disable-extensions", "--disable-background-networking", "--disable-sync",
             "--remote-debugging-pipe", f"--user-data-dir={self.profile}", f"--window-size={width},{height}", "about:blank"],
            pass_fds=(3, 4), preexec_fn=child_fds,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(os.environ.get("CHROMIUM_LOG", os.devnull), "w"))
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.next_id = 0
        self.buffer = b""
        self.session = None

    def send(self, method, params=None, session=True, timeout=20):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" not in self.buffer:
                left = deadline - time.monotonic()
                readable, _, _ = select.select([self.from_browser], [], [], max(0, left))
                if not readable:
                    raise RuntimeError(f"Chromium did not answer {method} within {timeout} s")
                chunk = os.read(self.from_browser, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"Chromium closed the pipe while answering {method}")
                self.buffer += chunk
            text, self.buffer = self.buffer.split(b"\0", 1)
            answer = json.loads(text)
            if answer.get("id") == self.next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})

    def attach(self):
        targets = self.send("Target.getTargets", session=False)["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.send("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True}, session=False)["sessionId"]

    def evaluate(self, expression):
        r = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in r:
            raise RuntimeError(f"the page's script failed: {r['exceptionDetails']}")
        return r["result"].get("value")

    def close(self):
        try:
            self.send("Browser.close", session=False, timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self.to_browser, self.from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.1)
    raise RuntimeError(f"timed out after {timeout} s waiting for {what}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--transfer", nargs=2, metavar=("GROUP", "NODE"))
    ap.add_argument("--screenshot")
    ap.add_argument("--timeout", type=float, default=30)
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = ap.parse_args()
    if not os.path.exists(args.chromium):
        print(f"dashboard_browser: no Chromium at {args.chromium} (apt install chromium)", file=sys.stderr)
        return 1
    browser = Browser(args.chromium, 1280, 900)
    try:
        browser.attach()
        browser.send("Page.enable")
        browser.send("Runtime.enable")
        browser.send("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False})
        browser.send("Page.navigate", {"url": args.url})
        wait_for(lambda: browser.evaluate("document.body && document.body.dataset.loaded === 'true'"), args.timeout,
                 "the page to draw its first overview")
        result = {"first": json.loads(browser.evaluate(EXTRACT))}
        if args.transfer:
            group, node = args.transfer
            selector = json.dumps(f'[data-group="{group}"] button[data-transfer="{node}"]')
            clicked = browser.evaluate(f"(() => {{ const b = document.querySelector({selector}); if (!b) return false; b.click(); return true; }})()")
            if not clicked:
                raise RuntimeError(f"no make-leader button for {node} in {group}")
            armed = wait_for(lambda: browser.evaluate(f"(() => {{ const b = document.querySelector({selector}); return b && b.classList.contains('armed') ? b.textContent : null; }})()"),
                             5, "the button to arm")
            browser.evaluate(f"document.querySelector({selector}).click()")
            started = time.monotonic()
            card = json.dumps(f'[data-group="{group}"]')
            wait_for(lambda: browser.evaluate(f"(() => {{ const g = document.querySelector({card}); return g && g.dataset.leader === {json.dumps(node)}; }})()"),
                     args.timeout, f"the page to show {node} leading {group}")
            seconds = round(time.monotonic() - started, 3)
            # The regular poll may draw the new leader before the POST's answer draws its message.
            wait_for(lambda: browser.evaluate("(() => { const t = document.getElementById('toast'); return t && t.textContent.length > 0; })()"),
                     15, "the page to report the transfer's answer")
            result["transfer"] = {"armedText": armed, "seconds": seconds}
            result["after"] = json.loads(browser.evaluate(EXTRACT))
        if args.screenshot:
            shot = browser.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
            with open(args.screenshot, "wb") as f:
                f.write(base64.b64decode(shot["data"]))
            result["screenshot"] = args.screenshot
        print(json.dumps(result))
        return 0
    except Exception as e:  # a clear message, never a traceback, for the test's log
        print(f"dashboard_browser: {e}", file=sys.stderr)
        try:
            print(json.dumps({"error": str(e), "page": json.loads(browser.evaluate(EXTRACT))}))
        except Exception:
            pass
        return 1
    finally:
        browser.close()


if __name__ == "__main__":
    sys.exit(main())
