"""The web console in a real browser: Debian's Chromium driven headless by Playwright.

Usage: console_test.py URL [--users-url URL USER PASSWORD] [--screenshots DIR]

URL is a `weir server` without authentication, already holding nothing; the script
creates its streams over the REST API, then checks what a user sees in the page. With
--users-url it also checks a server started with a users file: nothing readable without
credentials, the console with them. Prints one `ok: ...` line per check; exits non-zero
(with the reason) at the first that fails.
"""

import json
import sys
import time
import urllib.request

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
# Without these Chromium tries Google's hosts at every start, which a closed network refuses.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def ksql(base, sql, auth=None):
    req = urllib.request.Request(
        base + "/ksql",
        data=json.dumps({"ksql": sql, "streamsProperties": {}}).encode(),
        headers={"Content-Type": "application/vnd.ksql.v1+json"},
    )
    if auth:
        req.add_header("Authorization", auth)
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def insert(base, stream, rows):
    """INSERT VALUES over /ksql, one statement per row, in one request."""
    sql = " ".join(
        f"INSERT INTO {stream} ({', '.join(r)}) VALUES ({', '.join(sql_literal(v) for v in r.values())});"
        for r in rows
    )
    ksql(base, sql)


def bulk_insert(base, stream, rows):
    """Many rows at once over /inserts-stream (HTTP/2 cleartext, as ksqlDB's clients)."""
    import httpx

    body = json.dumps({"target": stream}) + "\n" + "\n".join(json.dumps(r) for r in rows)
    with httpx.Client(http1=False, http2=True, timeout=120) as c:
        r = c.post(base + "/inserts-stream", content=body.encode())
        r.raise_for_status()
        acks = [json.loads(line) for line in r.text.splitlines() if line.strip()]
    assert len(acks) == len(rows) and all(a.get("status") == "ok" for a in acks), acks[-1:]


def sql_literal(v):
    return "'" + v.replace("'", "''") + "'" if isinstance(v, str) else repr(v)


def ok(what):
    print(f"ok: {what}", flush=True)


def console_checks(browser, base, shots):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    ksql(base, "CREATE STREAM readings (car VARCHAR KEY, speed DOUBLE, temp INT) "
               "WITH (KAFKA_TOPIC='readings', VALUE_FORMAT='JSON', PARTITIONS=1);")
    ksql(base, "CREATE TABLE speeds AS SELECT car, COUNT(*) AS n, MAX(speed) AS top "
               "FROM readings GROUP BY car EMIT CHANGES;")
    ksql(base, "CREATE STREAM fast AS SELECT car, speed FROM readings WHERE speed > 100 EMIT CHANGES;")

    # The page is light: what the first load fetches, gzipped as a server or proxy would.
    import gzip

    sizes = {}
    for path in ["/", "/console/app.js", "/console/app.css"]:
        req = urllib.request.Request(base + path, headers={"Accept": "text/html"})
        with urllib.request.urlopen(req, timeout=10) as r:
            sizes[path] = len(gzip.compress(r.read()))
    total = sum(sizes.values())
    assert total <= 500 * 1024, sizes
    print(f"console: first load {total / 1024:.1f} KB gzipped ({sizes})", flush=True)

    # The catalog: the streams and tables made above, and the queries, listed live.
    page.goto(base + "/")
    expect(page.locator("#streams li", has_text="READINGS")).to_be_visible(timeout=15000)
    expect(page.locator("#streams li", has_text="FAST")).to_be_visible()
    expect(page.locator("#tables li", has_text="SPEEDS")).to_be_visible()
    expect(page.locator("#queries li")).to_have_count(2, timeout=15000)
    expect(page.locator("#functions li").first).to_be_visible()
    ok("the page lists the streams, tables, queries and functions")

    # Created after the page loaded: appears without a reload.
    ksql(base, "CREATE STREAM later (x INT) WITH (KAFKA_TOPIC='later', VALUE_FORMAT='JSON', PARTITIONS=1);")
    expect(page.locator("#streams li", has_text="LATER")).to_be_visible(timeout=10000)
    ok("a stream created elsewhere appears without a reload")

    # DESCRIBE EXTENDED one click away.
    page.locator("#streams li", has_text="READINGS").click()
    expect(page.locator("#details")).to_contain_text("SPEED", timeout=10000)
    expect(page.locator("#details")).to_contain_text("readings")
    ok("clicking a stream shows its description")

    # Completion from the catalog: typing a prefix offers the stream's name.
    editor = page.locator("#editor")
    editor.click()
    editor.fill("")
    editor.type("SELECT * FROM READ")
    expect(page.locator("#completions li", has_text="READINGS")).to_be_visible(timeout=5000)
    page.keyboard.press("Enter")
    expect(editor).to_have_value("SELECT * FROM READINGS")
    expect(page.locator("#highlight .tk-kw").first).to_have_text("SELECT")
    ok("completion offers catalog names; keywords are highlighted")

    # A push query typed in the editor shows rows inserted afterwards, live.
    editor.fill("SELECT car, speed, temp FROM readings EMIT CHANGES;")
    page.click("#run")
    expect(page.locator("#results thead th")).to_have_count(3, timeout=15000)
    expect(page.locator("#status")).to_contain_text("running", timeout=10000)
    rows = [{"CAR": f"car-{i % 3}", "SPEED": 60.0 + 10 * i, "TEMP": 80 + i} for i in range(8)]
    insert(base, "READINGS", rows)
    expect(page.locator("#results tbody tr")).to_have_count(8, timeout=15000)
    expect(page.locator("#results tbody tr").last).to_contain_text("130")
    ok("a push query run from the editor shows inserted rows live")

    # The chart of a numeric column receives the rows' points, with a threshold line.
    page.click("button[data-tab=charts]")
    page.select_option("#column", "SPEED")
    page.fill("#threshold", "100")
    insert(base, "READINGS", [{"CAR": "car-9", "SPEED": 150.0, "TEMP": 99}])
    expect(page.locator("#points")).to_have_text("9 points", timeout=15000)
    ok("the push query's chart receives points")
    # Records/s per query from the server's counters: the chart gets a line per query.
    expect(page.locator("#rate-legend span")).to_have_count(2, timeout=10000)
    if shots:
        page.wait_for_timeout(2500)
        page.screenshot(path=f"{shots}/charts.png", full_page=True)
    page.click("button[data-tab=results]")
    if shots:
        page.screenshot(path=f"{shots}/editor-results.png", full_page=True)

    # Pause holds the table still; Clear empties it.
    page.click("#pause")
    insert(base, "READINGS", [{"CAR": "car-1", "SPEED": 1.0, "TEMP": 1}])
    expect(page.locator("#row-count")).to_contain_text("10 rows received", timeout=10000)
    expect(page.locator("#results tbody tr")).to_have_count(9)
    page.click("#pause")
    expect(page.locator("#results tbody tr")).to_have_count(10, timeout=5000)
    page.click("#clear")
    expect(page.locator("#results tbody tr")).to_have_count(0)
    ok("pause holds the results, resume shows what came meanwhile, clear empties them")
    page.click("#stop")

    # A bad statement: its error with the position, marked in the editor.
    editor.fill("SELECT car\nFROM readings\nWHERE speed >>> 3 EMIT CHANGES;")
    page.click("#run")
    expect(page.locator("#error")).to_be_visible(timeout=10000)
    expect(page.locator("#error")).to_contain_text("line 3")
    line = page.locator("#error").get_attribute("data-line")
    assert line == "3", f"error line {line!r}"
    expect(page.locator("#highlight .tk-err")).to_have_count(1)
    if shots:
        page.screenshot(path=f"{shots}/error.png", clip={"x": 0, "y": 0, "width": 1400, "height": 330})
    ok("a bad statement shows its error with line and column: " + page.locator("#error").inner_text())
    editor.fill("CREATE STREAM broken WITH (KAFKA_TOPIC='nope');")
    page.click("#run")
    expect(page.locator("#error")).to_contain_text("VALUE_FORMAT", timeout=10000)
    ok("a statement the server refuses shows its message: " + page.locator("#error").inner_text())

    # A statement run from the editor: the catalog follows.
    editor.fill("CREATE STREAM slow AS SELECT car, speed FROM readings WHERE speed < 70 EMIT CHANGES;")
    page.click("#run")
    expect(page.locator("#status")).to_contain_text("done", timeout=15000)
    expect(page.locator("#streams li", has_text="SLOW")).to_be_visible(timeout=10000)
    ok("a statement run from the editor creates its stream")

    # A pull query: the table's current row for one key, and the query ends by itself.
    editor.fill("SELECT car, n, top FROM speeds WHERE car = 'car-1';")
    page.click("#run")
    expect(page.locator("#status")).to_contain_text("done: 1 rows", timeout=15000)
    expect(page.locator("#results tbody tr")).to_have_count(1)
    expect(page.locator("#results tbody tr").first).to_contain_text("car-1")
    ok("a pull query shows the table's row and ends")

    # The pipeline view draws each query's operators with live counts.
    page.click("button[data-tab=pipelines]")
    agg = page.locator(".pipeline", has_text="SPEEDS")
    expect(agg.locator(".node.source")).to_have_count(1, timeout=10000)
    expect(agg.locator(".node.sink")).to_have_count(1)
    assert agg.locator(".node.op").count() >= 2, "a projection and an aggregation"
    expect(agg.locator(".node.op", has_text="Aggregate")).to_be_visible()
    expect(agg.locator(".node.op").first).to_contain_text("in 10", timeout=10000)
    fast = page.locator(".pipeline", has_text="FAST")
    expect(fast.locator(".node.op").first).to_contain_text("out 4", timeout=10000)
    ok("the pipeline view draws the queries' operators with row counts")
    if shots:
        page.screenshot(path=f"{shots}/pipelines.png", full_page=True)

    # Processing log: a record that does not decode shows with its reason (written to the
    # topic as plain text through a KAFKA-format twin of the JSON stream).
    ksql(base, "CREATE STREAM raw_readings (line VARCHAR) WITH (KAFKA_TOPIC='readings', VALUE_FORMAT='KAFKA');")
    ksql(base, "INSERT INTO raw_readings (line) VALUES ('this is not json');")
    page.click("button[data-tab=plog]")
    expect(page.locator("#plog tbody tr").first).to_be_visible(timeout=15000)
    ok("the processing log shows bad records: " + page.locator("#plog tbody tr").first.inner_text()[:160])
    if shots:
        page.screenshot(path=f"{shots}/processing-log.png", full_page=True)

    # Keeping up: a push query over a topic holding many rows (read from the start, so
    # they come as fast as the server sends them); the page's frames are timed meanwhile.
    count = 30000
    ksql(base, "CREATE STREAM bulk (id INT, v DOUBLE) WITH (KAFKA_TOPIC='bulk', VALUE_FORMAT='JSON', PARTITIONS=1);")
    bulk_insert(base, "BULK", [{"ID": i, "V": (i % 97) / 10} for i in range(count)])
    page.click("button[data-tab=results]")
    page.evaluate("""() => {
        window.__frames = [];
        let last = performance.now();
        const tick = (t) => { window.__frames.push(t - last); last = t; requestAnimationFrame(tick); };
        requestAnimationFrame(tick);
    }""")
    editor.fill("SELECT * FROM bulk EMIT CHANGES;")
    page.check("#earliest")
    started = time.time()
    page.click("#run")
    expect(page.locator("#row-count")).to_contain_text(f"{count} rows received", timeout=120000)
    took = time.time() - started
    expect(page.locator("#results tbody tr")).to_have_count(1000)
    frames = page.evaluate("window.__frames")
    longest = max(frames) if frames else float("nan")
    print(f"console: {count} rows into the results table in {took:.2f} s ({count / took:,.0f} rows/s), "
          f"{len(frames)} frames, longest frame {longest:.0f} ms", flush=True)
    ok("the results table takes a fast push query whole, capped at 1000 rows shown")
    page.click("#stop")
    page.uncheck("#earliest")

    assert not errors, f"script errors in the page: {errors}"
    page.close()


def auth_checks(browser, base, user, password):
    import base64

    # Without credentials nothing is readable: the page, its script, the API.
    for path in ["/", "/console/app.js", "/console/api/queries", "/console/api/processing-log"]:
        try:
            urllib.request.urlopen(urllib.request.Request(base + path, headers={"Accept": "text/html"}), timeout=10)
            raise AssertionError(f"{path} answered without credentials")
        except urllib.error.HTTPError as e:
            assert e.code == 401, (path, e.code)
            assert "Basic" in e.headers.get("WWW-Authenticate", ""), path
    ok("with auth on, the page and its API answer 401 with a Basic challenge without credentials")

    context = browser.new_context()
    page = context.new_page()
    # Headless, the browser's credentials prompt has nobody to answer it: the navigation
    # fails with the challenge unanswered (or shows the 401), never the console.
    try:
        response = page.goto(base + "/")
        assert response.status == 401, response.status
        assert "editor" not in page.content()
    except PlaywrightError as e:
        assert "ERR_INVALID_AUTH_CREDENTIALS" in str(e), e
    context.close()
    ok("a browser without credentials is asked for them and sees no console")

    context = browser.new_context(http_credentials={"username": user, "password": password})
    page = context.new_page()
    token = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    ksql(base, "CREATE STREAM guarded (x INT) WITH (KAFKA_TOPIC='guarded', VALUE_FORMAT='JSON', PARTITIONS=1);", auth=token)
    page.goto(base + "/")
    expect(page.locator("#streams li", has_text="GUARDED")).to_be_visible(timeout=15000)
    ok("with credentials the console loads and lists the streams")
    context.close()


def main():
    args = sys.argv[1:]
    base = args.pop(0)
    users = shots = None
    while args:
        a = args.pop(0)
        if a == "--users-url":
            users = (args.pop(0), args.pop(0), args.pop(0))
        elif a == "--screenshots":
            shots = args.pop(0)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        started = time.time()
        console_checks(browser, base, shots)
        if users:
            auth_checks(browser, *users)
        browser.close()
        print(f"console: all checks passed in {time.time() - started:.1f} s", flush=True)


if __name__ == "__main__":
    main()
