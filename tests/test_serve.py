"""`embstore serve` (issue 36): a real server on a free loopback port, driven by a real headless Chromium
(Debian's, through Playwright: no browser download), checked against the CLI's `--json` of the same
question; its refusals (path traversal, SQL escapes, hosts, tokens, malformed queries); pages beside a
live ingest. Screenshots of each page land in tests/artifacts/serve/.
"""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest

import embstore

from .browser import chromium
from .conftest import EMBSTORE, ROOT, make_images, run_embstore

ARTIFACTS = ROOT / "tests" / "artifacts" / "serve"


@pytest.fixture(scope="module")
def served(figure_store):
    store, manifest, pictures = figure_store
    server = store.serve(port=0)
    yield store, server
    server.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def cli_json(store, *args):
    done = run_embstore("--store", store.path, "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def get(url: str, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    """A raw GET of `path` exactly as written (no client-side normalisation of `..` or escapes)."""
    u = urllib.parse.urlsplit(url)
    con = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    try:
        con.request("GET", path, headers=headers or {})
        r = con.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        con.close()


def api(url: str, path: str) -> dict:
    status, _, body = get(url, path)
    assert status == 200, (path, body[:300])
    return json.loads(body)


def test_every_api_answer_is_the_clis_json(served):
    store, server = served
    assert api(server.url, "/api/status") == cli_json(store, "status")
    page = api(server.url, "/api/class/knot")
    assert page["similar"] == cli_json(store, "query", "similar", "knot")
    assert [r["name"] for r in page["similar"]["results"]][:1] and page["class"]["images"] == 5
    assert api(server.url, "/api/class/knot?k=3&method=tstat&layer=hidden")["similar"] == cli_json(
        store, "query", "similar", "knot", "--k", "3", "--method", "tstat", "--layer", "hidden"
    )
    image = page["images"][0]["image_id"]
    api(server.url, f"/api/image/{image}")  # builds the index once: the notes then say both found it built
    assert api(server.url, f"/api/image/{image}")["nearest"] == cli_json(store, "query", "images", image)
    assert api(server.url, f"/api/image/{image}?k=4&layer=hidden")["nearest"] == cli_json(
        store, "query", "images", image, "--k", "4", "--layer", "hidden"
    )
    examples = api(server.url, "/api/examples")["examples"]
    assert len(examples) == 5
    for e in examples:  # the README's five queries, each as `embstore sql --json` answers it
        assert api(server.url, "/api/sql?q=" + urllib.parse.quote(e["sql"])) == cli_json(store, "sql", e["sql"])


def test_the_sql_examples_are_the_readmes_five_queries():
    import re

    from embstore.serve.app import examples

    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sql\n(.*?)```", readme[readme.index("### Five useful queries") :], re.S)[:5]
    assert [f"-- {e['title']}\n{e['sql']}" for e in examples()] == [b.strip() for b in blocks]


def test_a_browser_walks_from_a_class_to_a_neighbour_to_an_image(served, browser):
    store, server = served
    base = server.url.rstrip("/")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))

    def ready():
        page.wait_for_selector("body[data-ready]", timeout=60_000)

    # store: the counts are `embstore status --json`'s
    page.goto(base + "/")
    ready()
    status = cli_json(store, "status")
    for key in ("images", "labelled", "models", "vectors", "runs", "errors"):
        value = status[key]
        assert page.inner_text(f'#counts tr[data-key="{key}"] td') == str(len(value) if key == "models" else value)
    assert page.locator("#models tbody tr").count() == len(status["models"])
    page.screenshot(path=str(ARTIFACTS / "store.png"), full_page=True)

    # class: click knot in the class list; its neighbours are `query similar knot --json`'s, in order
    page.click('p.classes a:text-is("knot")')
    ready()
    assert page.url == base + "/class/knot"
    similar = cli_json(store, "query", "similar", "knot")["results"]
    rows = page.locator("#similar tbody tr")
    assert [rows.nth(i).get_attribute("data-name") for i in range(rows.count())] == [r["name"] for r in similar]
    assert [float(rows.nth(i).get_attribute("data-score")) for i in range(rows.count())] == [
        r["score"] for r in similar
    ]
    assert page.locator("#images figure").count() == 5
    page.screenshot(path=str(ARTIFACTS / "class.png"), full_page=True)

    # a neighbour: its own class page
    first = similar[0]["name"]
    page.click(f'#similar tbody tr[data-name="{first}"] a')
    ready()
    assert page.inner_text("h1").startswith(first)

    # an image of it: its nearest images are `query images ID --json`'s
    page.click("#images figure a >> nth=0")
    ready()
    image = page.url.rsplit("/", 1)[1]
    nearest = cli_json(store, "query", "images", image)["results"]
    figures = page.locator("#nearest figure")
    assert [figures.nth(i).get_attribute("data-image") for i in range(figures.count())] == [r["name"] for r in nearest]
    assert [float(figures.nth(i).get_attribute("data-score")) for i in range(figures.count())] == [
        r["score"] for r in nearest
    ]
    assert page.evaluate("document.querySelector('img.big').naturalWidth") > 0  # the file itself, served
    page.screenshot(path=str(ARTIFACTS / "image.png"), full_page=True)

    # analyses: the stored matching summary and 2 vs 2 curve; hovering a point shows its value
    page.goto(base + "/analyses")
    ready()
    summary = cli_json(store, "sql", "SELECT model_key, layer, error FROM matching_summary")["rows"]
    shown = page.locator("table[id^=matching-] tbody tr")
    assert sorted((shown.nth(i).get_attribute("data-layer"), float(shown.nth(i).get_attribute("data-error")))
                  for i in range(shown.count())) == sorted((r["layer"], r["error"]) for r in summary)  # fmt: skip
    rsa = cli_json(store, "sql", "SELECT layer, acc_2v2 FROM rsa_results")["rows"]
    assert page.locator("#rsa tbody tr").count() == len(rsa)
    dot = page.locator("#rsa-chart circle").first
    dot.hover()
    assert dot.get_attribute("data-layer") in page.inner_text("#tip")
    page.screenshot(path=str(ARTIFACTS / "analyses.png"), full_page=True)
    page.locator("div:has(> #rsa-chart) input[data-toggle]").first.uncheck()  # a model's curve toggles off
    assert page.locator("#rsa-chart g[data-series]").first.evaluate("g => g.style.display") == "none"
    assert page.locator("#roc-chart circle").count() > 2  # the ROC of the stored cosines, hoverable
    hidden = next(r["error"] for r in summary if r["layer"] == "hidden")  # fig. 6: the model at its `hidden` layer
    assert [float(v) for v in page.locator("#errors-chart circle").evaluate_all(
        "cs => cs.map(c => c.dataset.value)")] == [hidden]  # fmt: skip
    page.locator("#errors-chart circle").first.hover()
    assert "top-1" in page.inner_text("#tip")
    assert page.locator("#ratings-chart circle").count() == 2 * 8  # fig. 4: both pairs of the 8 rated triplets

    # map: hover a class prototype (placed as the page places it) and see its name; a box selects
    page.goto(base + "/map?of=classes&layer=hidden")
    ready()
    data = api(server.url, "/api/map?of=classes&layer=hidden")
    box = page.locator("canvas#map").bounding_box()
    xs, ys = data["x"], data["y"]
    i = 0
    px = 16 + (xs[i] - min(xs)) / (max(xs) - min(xs)) * (900 - 32)
    py = 640 - 16 - (ys[i] - min(ys)) / (max(ys) - min(ys)) * (640 - 32)
    page.mouse.move(box["x"] + px, box["y"] + py)
    assert page.get_attribute("canvas#map", "data-hover") == data["ids"][i]
    assert data["ids"][i] in page.inner_text("#tip")
    page.mouse.move(box["x"] + 2, box["y"] + 2)
    page.mouse.down()
    page.mouse.move(box["x"] + 898, box["y"] + 638, steps=5)
    page.mouse.up()
    assert page.locator("#selection-table tbody tr").count() == data["n"]
    page.screenshot(path=str(ARTIFACTS / "map.png"), full_page=True)
    page.mouse.click(box["x"] + px, box["y"] + py)  # a click opens that class's page
    ready()
    assert urllib.parse.unquote(page.url).startswith(base + "/class/" + data["ids"][i])

    # SQL: an example runs and shows `embstore sql --json`'s rows
    page.goto(base + "/sql")
    ready()
    example = api(server.url, "/api/examples")["examples"][1]
    page.click('a[data-example="1"]')
    page.wait_for_selector('body[data-ran="1"]')
    expected = cli_json(store, "sql", example["sql"])
    cells = page.locator("#rows tbody tr").evaluate_all("rows => rows.map(r => [...r.cells].map(c => c.textContent))")
    assert len(cells) == len(expected["rows"])
    for got, row in zip(cells, expected["rows"]):
        for text, column in zip(got, expected["columns"]):
            value = row[column]
            assert float(text) == pytest.approx(value, abs=1e-6) if isinstance(value, float) else text == str(value)
    page.screenshot(path=str(ARTIFACTS / "sql.png"), full_page=True)

    assert requested and all(u.startswith(base + "/") for u in requested), [u for u in requested if base not in u]
    page.close()


def _one_line_error(status: int, body: bytes) -> str:
    assert 400 <= status < 500, (status, body[:300])
    text = body.decode()
    assert "Traceback" not in text and "root:" not in text
    if text.startswith("{"):
        text = json.loads(text)["error"]["message"]
    assert text.strip() and "\n" not in text.strip(), text
    return text


def test_bad_requests_are_refused_with_one_line(served, tmp_path):
    store, server = served
    for path in (
        "/file/image/../../etc/passwd",
        "/file/image/..%2F..%2Fetc%2Fpasswd",
        "/file/thumb/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/file/image/%252e%252e%252fetc%252fpasswd",
        "/image/../../etc/passwd",
        "/image/%2e%2e/%2e%2e/etc/passwd",
        "/static/../app.py",
        "/static/..%2f..%2fapi.py",
        "/file/image/" + "0" * 20,  # an id the catalog does not list
        "/file/image/ZZZZ",
        "/api/image/xyz",
        "/api/class/knot?k=abc",
        "/api/class/knot?k=0",
        "/api/class/knot?k=%ZZ",
        "/api/class/no%20such%20class",
        "/api/map?of=bogus",
        "/api/map?limit=x",
        "/api/map?layer=nosuch",
        "/api/sql",
        "/nosuch",
    ):
        _one_line_error(*(lambda s, h, b: (s, b))(*get(server.url, path)))
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    for query, message in {
        f"COPY images TO '{tmp_path}/x.csv'": "COPY is refused",
        f"SELECT * FROM read_text('{secret}')": "Permission Error",
        "SELECT * FROM read_csv('/etc/passwd')": "Permission Error",
        "INSTALL httpfs": "INSTALL is refused",
        f"ATTACH '{tmp_path}/other.duckdb'": "ATTACH is refused",
        "SET enable_external_access = true": "configuration has been locked",
        "DELETE FROM images": "read-only",
    }.items():
        status, _, body = get(server.url, "/api/sql?q=" + urllib.parse.quote(query))
        assert message in _one_line_error(status, body), (query, body)
    assert not (tmp_path / "x.csv").exists() and cli_json(store, "status")["images"] > 0
    # another Host (DNS rebinding) is refused; pages say where scripts may come from
    status, _, body = get(server.url, "/api/status", {"Host": "evil.example"})
    assert status == 421 and "evil.example" in body.decode()
    status, headers, _ = get(server.url, "/")
    assert status == 200 and "default-src 'none'" in headers["content-security-policy"]


def test_a_token_guards_every_route_and_other_hosts_need_one(served):
    store, _ = served
    with pytest.raises(embstore.UsageError, match="token"):
        store.serve(host="0.0.0.0", port=0)
    done = run_embstore("--store", store.path, "serve", "--host", "0.0.0.0", "--port", "0")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--token" in done.stderr, done.stderr
    with store.serve(port=0, token="s3cret-token") as server:
        port = urllib.parse.urlsplit(server.url).port
        done = run_embstore("--store", store.path, "serve", "--port", port)  # a port in use: one line, exit 2
        assert done.returncode == 2 and done.stderr.count("\n") == 1 and "cannot listen" in done.stderr, done.stderr
        assert server.url.endswith("?token=s3cret-token")
        plain = server.url.split("?")[0]
        for path in ("/", "/api/status", "/static/app.js", "/file/thumb/" + "0" * 20):
            status, _, body = get(plain, path)
            assert status == 401 and "token" in _one_line_error(status, body)
        assert get(plain, "/api/status?token=wrong-token")[0] == 401
        status, headers, _ = get(plain, "/?token=s3cret-token")
        assert status == 200 and "embstore_token=s3cret-token" in headers["set-cookie"]
        assert get(plain, "/api/status", {"Cookie": "embstore_token=s3cret-token"})[0] == 200
        assert get(plain, "/api/status", {"Authorization": "Bearer s3cret-token"})[0] == 200
    with store.serve(host="0.0.0.0", port=0, token="auto") as server:  # every interface: the printed URL works
        token = urllib.parse.parse_qs(urllib.parse.urlsplit(server.url).query)["token"][0]
        assert len(token) >= 16 and get(server.url, "/api/status?token=" + token)[0] == 200
        assert get(server.url, "/api/status")[0] == 401


def test_the_cli_serves_until_interrupted(served):
    store, _ = served
    proc = subprocess.Popen(
        [str(EMBSTORE), "--store", str(store.path), "--json", "serve", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        lines = [proc.stdout.readline()]
        while lines[-1].rstrip() != "}":  # the one JSON object, printed before it serves
            lines.append(proc.stdout.readline())
        url = json.loads("".join(lines))["url"]
        assert api(url, "/api/status")["images"] == cli_json(store, "status")["images"]
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err


def test_pages_load_during_a_live_ingest(tmp_path):
    """100 of 100 page loads answer while another process ingests (the server reads the published
    snapshot, never the writer's catalog), and they show the ingest's progress."""
    make_images(tmp_path / "imgs", 120, size=48)
    store_path = tmp_path / "s"
    base = [str(EMBSTORE), "--store", str(store_path), "ingest", "--model", "resnet18", "--weights", "none", "--quiet"]
    assert subprocess.run([*base, "--images", str(tmp_path / "imgs"), "--limit", "16"]).returncode == 0
    writer = subprocess.Popen([*base, "--images", str(tmp_path / "imgs"), "--commit-seconds", "0.2"])
    try:
        reader = embstore.open(store_path, snapshot=True)
        with reader.serve(port=0) as server:
            deadline = time.monotonic() + 120  # the writer is seen running (its first commit published)
            while api(server.url, "/api/store")["running"] == 0 and writer.poll() is None:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            seen, running, errors = set(), 0, []
            for i in range(100):
                path = ("/", "/api/store", "/api/status", "/class/tench", "/api/map?of=images&layer=hidden")[i % 5]
                status, _, body = get(server.url, path)
                if status != 200:
                    errors.append((path, status, body[:200]))
                    continue
                if path == "/api/store":
                    d = json.loads(body)
                    seen.add(d["status"]["images"])
                    running += d["running"]
                time.sleep(0.02)
            assert errors == []
            assert running >= 1 and min(seen) < 120  # loads answered while images were still coming in
            assert writer.wait(timeout=600) == 0
            final = api(server.url, "/api/status")
        assert final["images"] == 120 and final == cli_json(reader, "status")
    finally:
        if writer.poll() is None:
            writer.kill()


def test_a_snapshot_reader_never_writes(served):
    store, _ = served
    reader = embstore.open(store.path, snapshot=True)
    assert reader.status()["images"] == store.status()["images"]
    with pytest.raises(embstore.UsageError, match="snapshot"):
        reader.run_sql("SELECT 1", write=True)
    with pytest.raises(embstore.UsageError, match="snapshot"):
        reader.ingest(Path(store.path).parent / "imgs", model="efficientnet_lite0")
    with pytest.raises(embstore.StoreError, match="no published snapshot"):
        embstore.open(Path(store.path).parent / "nowhere", snapshot=True)
