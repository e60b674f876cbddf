"""`prefcurate review`: people label pairs on a local page; the labels go to DuckDB and say how far the
judge agrees with them. The page is driven in a real headless Chromium (Debian's, through Selenium)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import duckdb
import pytest
from conftest import ROOT, claude_config, seed_scored, seeded_context

from prefcurate import pairs
from prefcurate.store import Store
from prefcurate.testing.messages_api import MessagesAPIServer
from prefcurate.testing.planted import PlantedJudge

ARTIFACTS = ROOT / ".cache" / "artifacts"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture
def reviewed_db(db):
    """20 pairs of one judge; one response carries markup, which the page must show as text."""
    with Store(db) as store:
        seed_scored(store, {f"prompt {i}": [(f"good answer {i}" + (" <script>alert(1)</script>" if i == 3 else ""), 8.0),
                                            (f"bad answer {i}" + " padded out" * (i % 2), 3.0 + i / 10)]
                            for i in range(20)})
        pairs.run(store, seeded_context())
    return db


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(db: Path, *args: str) -> tuple[subprocess.Popen, str]:
    """`prefcurate review --db DB ARGS` in its own process, once its page answers."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "prefcurate.cli", "review", "--db", str(db), "--port", str(port), *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(url + "/review.css", timeout=1)
            return proc, url
        except (urllib.error.URLError, ConnectionError):
            if proc.poll() is not None:
                raise AssertionError(proc.stdout.read()) from None
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("the review page did not answer within 30 s")


def chromium():
    """Debian's headless Chromium, driven through its own ChromeDriver (nothing downloaded)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("the browser test needs Debian's chromium and chromium-driver: "
                    "apt-get install chromium chromium-driver (make setup does)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,1100"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def test_label_three_pairs_with_the_keyboard_in_a_real_browser(cli, reviewed_db):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    assert cli("audit", "--db", reviewed_db).exit_code == 0  # the sample is stratified by the audit's flags
    proc, url = serve(reviewed_db, "--sample", "8", "--reviewer", "ada")
    driver = chromium()
    try:
        # While the page is served, the store has its writer: another one is told so, in one line.
        busy = subprocess.run([sys.executable, "-m", "prefcurate.cli", "audit", "--db", str(reviewed_db)], cwd=ROOT,
                              capture_output=True, text=True)
        assert busy.returncode == 2 and "in use by another prefcurate process" in busy.stderr

        driver.get(url)
        assert driver.find_element(By.ID, "counts").text == "0 labelled / 8 to do"
        seen = []
        for key, side in ((Keys.ARROW_LEFT, "left"), ("2", "right"), ("t", "tie")):
            pair_id = driver.find_element(By.NAME, "pair_id").get_attribute("value")
            left, right = driver.find_element(By.ID, "left").text, driver.find_element(By.ID, "right").text
            assert driver.find_element(By.ID, "revealed" if seen else "prompt")  # the verdict only after a label
            driver.find_element(By.TAG_NAME, "body").send_keys(key)
            WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "counts").text.startswith(f"{len(seen) + 1} labelled"))
            seen.append((pair_id, side, left, right))
            assert pair_id in driver.find_element(By.ID, "revealed").text
        assert not driver.find_elements(By.CSS_SELECTOR, "script:not([src])")  # only the app's own script
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "review_page.png"))
    finally:
        driver.quit()
        proc.terminate()
        proc.wait(10)

    con = duckdb.connect(str(reviewed_db), read_only=True)
    rows = {r[0]: r[1:] for r in con.execute(
        "SELECT h.pair_id, h.reviewer, h.label, h.shown_left, v.chosen_text, v.rejected_text "
        "FROM human_labels h JOIN v_pairs v USING (pair_id)").fetchall()}
    con.close()
    assert len(rows) == 3
    for pair_id, side, left, right in seen:
        reviewer, label, shown_left, chosen, rejected = rows[pair_id]
        assert reviewer == "ada" and (left, right) == ((chosen, rejected) if shown_left == "chosen" else (rejected, chosen))
        assert label == {"left": shown_left, "right": "rejected" if shown_left == "chosen" else "chosen", "tie": "tie"}[side]


def test_the_page_refuses_what_it_should_and_escapes_what_it_shows(reviewed_db):
    from fastapi.testclient import TestClient

    from prefcurate.review import sample_pairs
    from prefcurate.review_app import create_app, open_for_review

    with open_for_review(reviewed_db) as store:
        with pytest.raises(Exception, match="disabled by configuration"):
            store.query("select * from read_text('/etc/hostname')")
        sample = sample_pairs(store, 20)
        client = TestClient(create_app(store, sample, "ada"))
        page = client.get("/?name=ada")
        assert page.status_code == 200 and "default-src 'none'" in page.headers["content-security-policy"]
        token = page.text.split('name="token" value="')[1].split('"')[0]

        def post(**form) -> int:
            return client.post("/label", data={"token": token, "reviewer": "ada", "side": "left", "note": ""} | form,
                               follow_redirects=False).status_code

        assert post(pair_id="no-such-pair") == 400
        assert post(pair_id=sample[0], side="sideways") == 400
        assert post(pair_id=sample[0], note="x" * 2001) == 400
        assert post(pair_id=sample[0], token="forged") == 403
        assert store.scalar("SELECT count(*) FROM human_labels") == 0  # nothing written
        assert 'id="revealed"' not in client.get(f"/?name=ada&last={sample[0]}").text  # not before it is labelled
        assert post(pair_id=sample[0], note="<b>bold</b> claim") == 303
        assert 'id="revealed"' in client.get(f"/?name=ada&last={sample[0]}").text

        # Markup in a response is shown as text, never run.
        marked = next(p for p in sample if "script" in store.scalar(
            "SELECT chosen_text FROM v_pairs WHERE pair_id = ?", [p]))
        for p in sample:
            if p != marked:
                assert post(pair_id=p, side="skip") == 303
        shown = client.get("/?name=ada").text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in shown and "<script>alert" not in shown


def test_labels_report_agreement_export_and_calibrate_from_reviews(cli, reviewed_db, tmp_path, monkeypatch):
    from prefcurate.review import chosen_left, record_label, review_agreement, sample_pairs

    with Store(reviewed_db) as store:
        sample = sample_pairs(store, 6)
        for i, p in enumerate(sample):
            record_label(store, sample, p, "ada", "left" if i % 2 else "right")
            # grace takes the judge's side every time, wherever it was shown to her
            assert record_label(store, sample, p, "grace", "left" if chosen_left(p, "grace") else "right") == "chosen"
        agreement = review_agreement(store)
        ada = {r["pair_id"]: r["label"] for r in store.query("SELECT pair_id, label FROM human_labels WHERE reviewer = 'ada'")}
    assert agreement["n_labels"] == 12 and agreement["n_pairs"] == 6 and agreement["n_reviewers"] == 2
    assert agreement["judge_agreement"] == pytest.approx((list(ada.values()).count("chosen") + 6) / 12)
    assert agreement["reviewer_agreement"] == pytest.approx(list(ada.values()).count("chosen") / 6)

    audit = json.loads(cli("audit", "--json", "--db", reviewed_db).output)
    assert audit["reviews"]["judge_agreement"] == agreement["judge_agreement"]

    out = tmp_path / "labels.jsonl"
    assert cli("review", "--export", out, "--db", reviewed_db).exit_code == 0
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(exported) == 12 and {e["reviewer"] for e in exported} == {"ada", "grace"}
    assert exported[0]["prompt"][0]["role"] == "user" and {"chosen", "rejected", "label", "note"} <= set(exported[0])

    # The store's judge against these people: each pair's majority label (ada and grace split: a tie).
    config = claude_config(tmp_path / "claude.yaml", {"model": "test-judge"})
    with MessagesAPIServer(scorer=PlantedJudge()) as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-key")
        result = cli("calibrate", config, "--from-reviews", "--yes", "--json", "--db", reviewed_db)
    assert result.exit_code == 0, result.output
    c = json.loads(result.output)
    agreed = sum(label == "chosen" for label in ada.values())
    assert c["n"] == 6 and c["source"] == "reviews" and c["agreement_n"] == agreed and len(server.requests) == 12
