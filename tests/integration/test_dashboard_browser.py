"""The dashboard end to end in a real headless Chromium (Debian's, driven by chromedriver).

A real engine process runs a channel whose MLLP destination points at a closed port with
one attempt, so a message sent with python-hl7's MLLP client ends in ERROR. In the browser
an operator (added with `interlink users add`) logs in, sees the monitor on the devices
page, finds the message by its control id, opens it, sees its segments with field names
and its ACK code, starts an EHR (`mllp_sink.py`), presses Reprocess, and watches the
message turn SENT with the EHR's ACK and the counters move on the channels page. A viewer
then sees the counters but no message content.

Without Chromium the test fails, saying how to install it (`tools/ensure-chromium`);
`INTERLINK_TEST_NO_BROWSER=1` skips it instead, for developers without a browser.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hl7.client
import pytest

from tests.support import (
    INTERLINK,
    REPO,
    EngineProcess,
    engine_env,
    free_port,
    refused,
    start_engine,
    wait_for_port,
)

pytestmark = pytest.mark.integration

NO_BROWSER_ENV = "INTERLINK_TEST_NO_BROWSER"
CHROMIUM = os.environ.get("INTERLINK_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("INTERLINK_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
TOOLS = REPO.parent / "shared" / "tools"
WAIT = 60.0
CONTROL_ID = "DASH-0001"
PATIENT = "MRN-4711"
DEVICE = "0123456789ABCDEF"
UNIT = "ICU3"
HOSTILE = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
"""Message content is untrusted: this note must show as text, never become markup."""
PASSWORDS = {"olivia": "correct horse battery staple", "victor": "viewer of the ward",
             "ada": "analytical engine 1843"}


def oru(control_id: str) -> str:
    """A small PCD-01-shaped ORU^R01 with a patient, an order and one observation."""
    return "\r".join([
        "MSH|^~\\&|MONITOR|ICU-3|||20261125083000||ORU^R01^ORU_R01|"
        f"{control_id}|P|2.6",
        f"PID|||{PATIENT}^^^GH^MR||DOE^JANE",
        f"PV1||I|{UNIT}^BED1",
        f"OBR|1|{control_id}|{control_id}|182777000^monitoring of patient^SCT",
        "OBX|1||69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|1|||||||R|||||||"
        f"{DEVICE}^EUI-64",
        "OBX|2|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.0.0.1|97|262688^MDC_DIM_PERCENT^MDC"
        "|||||R|||20261125083000",
        f"NTE|1||{HOSTILE}",
    ]) + "\r"


def channel_file(directory: Path, source_port: int, ehr_port: int) -> None:
    """A channel that forwards to an EHR on `ehr_port` and gives up after one attempt."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "icu.yaml").write_text(f"""\
name: icu
source: {{type: mllp, port: {source_port}}}
pcd:
  devices: {{expected_interval_seconds: 60, silent_after: 3}}
destinations:
  - name: ehr
    to: {{type: mllp, host: 127.0.0.1, port: {ehr_port}, ack_timeout_seconds: 5,
         connect_timeout_seconds: 2, reconnect_max_seconds: 0.5}}
    retry: {{initial_seconds: 0.2, max_seconds: 0.2, jitter: 0, max_attempts: 1}}
    on_exhausted: skip
""")


# -- the browser -----------------------------------------------------------------------------


def browser_missing() -> str | None:
    """Why Chromium cannot be driven here, or None when it can."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return f"{path} is missing"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the selenium package is not installed (pip install -e '.[test]')"
    return None


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """A headless Chromium with a fresh profile, through Debian's chromedriver."""
    if os.environ.get(NO_BROWSER_ENV) == "1":
        pytest.skip(f"{NO_BROWSER_ENV}=1: the browser test is left out of this run")
    missing = browser_missing()
    if missing:
        pytest.fail(f"cannot run the dashboard's browser test: {missing}; run "
                    f"tools/ensure-chromium (as root) or set {NO_BROWSER_ENV}=1 to skip it",
                    pytrace=False)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=tmp_path))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1000",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def until(driver: Any, condition: Callable[[Any], Any], what: str) -> Any:
    """Wait (polling) for a condition on the page; fail naming what never happened."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, WAIT, poll_frequency=0.1).until(condition)
    except TimeoutException:
        console = "\n".join(str(e) for e in driver.get_log("browser"))
        page = text_of(driver, "body")
        raise AssertionError(f"never saw {what}\nbrowser console:\n{console}\n"
                             f"page:\n{page}") from None


def click(driver: Any, selector: str) -> bool:
    """Click the first element matching a CSS selector; False (to poll again) when there is
    none yet or the page re-rendered it between finding and clicking."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        driver.find_element(By.CSS_SELECTOR, selector).click()
    except (NoSuchElementException, StaleElementReferenceException):
        return False
    return True


def text_of(driver: Any, selector: str) -> str:
    """The text of the first element matching a CSS selector ('' when there is none).

    Read in one script call, so a page re-rendering between two calls cannot stale it.
    """
    text = driver.execute_script(
        "const el = document.querySelector(arguments[0]); return el ? el.innerText : '';",
        selector)
    return str(text or "").strip()


def counter(driver: Any, destination: str, name: str) -> str:
    return text_of(driver, f'tr.destination[data-destination="{destination}"] '
                           f'[data-counter="{name}"]')


# -- the engine's side -----------------------------------------------------------------------


def status_of(engine: EngineProcess, control_id: str) -> str:
    """A message's status as `interlink messages list` reports it."""
    import json

    rows = engine.run_cli("messages", "list", "--control-id", control_id,
                          "--format", "jsonl").stdout.splitlines()
    return json.loads(rows[0])["status"] if rows else ""


def log_in(driver: Any, user: str, password: str) -> None:
    """Fill in and submit the login form."""
    from selenium.webdriver.common.by import By

    name = until(driver, lambda d: d.find_element(By.ID, "login-user"), "the login form")
    name.clear()
    name.send_keys(user)
    secret = driver.find_element(By.ID, "login-password")
    secret.clear()
    secret.send_keys(password)
    driver.find_element(By.ID, "login-submit").click()


def start_sink(port: int, store: Path) -> subprocess.Popen[bytes]:
    """`mllp_sink.py`: an EHR that ACKs everything and appends what it got to a file."""
    proc = subprocess.Popen(
        [sys.executable, str(TOOLS / "mllp_sink.py"), "--port", str(port),
         "--store", str(store), "--max-seconds", "600"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, proc)
    return proc


def test_operator_finds_opens_and_reprocesses_a_message(browser: Any, tmp_path: Path) -> None:
    """Log in, search by control id, open, see segments and ACK, reprocess, counters move."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    source_port, ehr_port = free_port(), free_port()
    channels = tmp_path / "channels"
    channel_file(channels, source_port, ehr_port)
    engine = start_engine(tmp_path / "data", channels=channels)
    sink = None
    try:
        wait_for_port(source_port, engine.proc)
        client = hl7.client.MLLPClient("127.0.0.1", source_port)
        try:
            answer = client.send_message(oru(CONTROL_ID))
        finally:
            client.close()
        assert f"MSA|AA|{CONTROL_ID}".encode() in answer
        until(browser, lambda _: status_of(engine, CONTROL_ID) == "ERROR",
              "the message dead-lettered (ERROR) after its one attempt")

        for name, role in (("olivia", "operator"), ("victor", "viewer"), ("ada", "admin")):
            added = subprocess.run(
                [*INTERLINK, "users", "add", name, "--role", role, "--password-stdin"],
                input=PASSWORDS[name] + "\n", env=engine_env(
                    engine.data_dir, engine.port, engine.config, engine.admin_port,
                    engine.channels),
                cwd=REPO, capture_output=True, text=True, timeout=60)
            assert added.returncode == 0, added.stderr

        # Log in: nothing but the login form before that.
        browser.get(f"http://127.0.0.1:{engine.admin_port}/")
        log_in(browser, "olivia", "not the password")
        until(browser, lambda d: text_of(d, "#login-error") == "Wrong user or password.",
              "a refused login")
        assert not browser.find_elements(By.CSS_SELECTOR, "#channels-table")
        log_in(browser, "olivia", PASSWORDS["olivia"])
        until(browser, lambda d: text_of(d, "#who") == "olivia · operator", "olivia logged in")

        # The channels page: one dead letter, nothing sent yet.
        until(browser, lambda d: counter(d, "ehr", "errored") == "1",
              "the ehr destination with one dead letter")
        assert counter(browser, "ehr", "sent") == "0"
        icu = 'tr.channel[data-channel="icu"]'
        assert text_of(browser, f'{icu} [data-counter="received"]') == "1"
        assert text_of(browser, f'{icu} [data-counter="sent"]') == "0"
        assert text_of(browser, 'tr.channel[data-channel="icu"] [data-field="state"]') == \
            "deployed"
        assert not browser.find_elements(By.CSS_SELECTOR, "button[data-action]"), \
            "pause and resume are for administrators"

        # The devices page: the monitor that sent it, in its unit.
        browser.find_element(By.CSS_SELECTOR, 'a[data-page="devices"]').click()
        device = f'#devices-table tr[data-device="EUI-64:{DEVICE}"]'
        until(browser, lambda d: text_of(d, device), "the monitor on the devices page")
        assert UNIT in text_of(browser, device)
        assert text_of(browser, f'{device} [data-field="interval"]') == "60 s"
        assert text_of(browser, f'{device} [data-field="last_seen"]').startswith("20")
        assert text_of(browser, f'{device} [data-field="state"]') != "silent"
        assert text_of(browser, f'#units-table tr[data-unit="{UNIT}"]')

        # The message browser: search by control id, open the one result.
        browser.find_element(By.CSS_SELECTOR, 'a[data-page="messages"]').click()
        search_box = until(browser, lambda d: d.find_element(By.ID, "search-control_id"),
                           "the search form")
        search_box.send_keys(CONTROL_ID)
        browser.find_element(By.ID, "search-submit").click()
        until(browser, lambda d: CONTROL_ID in text_of(d, "tr.message"), "a search result")
        assert browser.execute_script(
            "return document.querySelectorAll('tr.message').length") == 1
        assert "ERROR" in text_of(browser, "tr.message")
        until(browser, lambda d: click(d, "tr.message a"), "the search result opened")

        # The detail: segments with field names, the ACK, the delivery, the timeline.
        until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '.segment[data-segment="PID"]'),
              "the PID segment")
        raw = browser.find_element(By.CSS_SELECTOR, '.payload[data-kind="raw"]')
        segments = [s.get_attribute("data-segment")
                    for s in raw.find_elements(By.CSS_SELECTOR, ".segment")]
        assert segments == ["MSH", "PID", "PV1", "OBR", "OBX", "OBX", "NTE"]
        assert raw.find_element(By.CSS_SELECTOR, '[data-path="NTE-3"]').text == HOSTILE
        assert not browser.find_elements(By.CSS_SELECTOR, "#view img, #view script")
        assert browser.execute_script("return window.pwned === undefined")
        pid3 = raw.find_element(By.CSS_SELECTOR, '[data-path="PID-3"]')
        assert pid3.get_attribute("title") == "PID-3 Patient Identifier List (CX)"
        mrn = raw.find_element(By.CSS_SELECTOR, '[data-path="PID-3.1"]')
        assert mrn.text == PATIENT
        ActionChains(browser).move_to_element(mrn).perform()
        until(browser, lambda d: text_of(d, '.payload[data-kind="raw"] .field-info')
              == "PID-3.1 Patient Identifier List › Id Number", "the field name on hover")
        msh10 = raw.find_element(By.CSS_SELECTOR, '[data-path="MSH-10"]')
        assert msh10.text == CONTROL_ID
        assert msh10.get_attribute("title").startswith("MSH-10 Message Control Id")

        assert text_of(browser, "#ack-code") == "AA"
        ours = browser.find_element(By.CSS_SELECTOR, '#acks .payload[data-kind="ack"]')
        assert f"MSA|AA|{CONTROL_ID}" in ours.text.replace("\n", "")
        assert text_of(browser, "#message-status") == "ERROR"
        assert "ERROR" in text_of(browser, '#deliveries-table tr[data-destination="ehr"]')
        assert browser.find_elements(By.CSS_SELECTOR, "#timeline li")

        # The EHR comes up; reprocess delivers the message.
        sink = start_sink(ehr_port, tmp_path / "ehr.hl7")
        browser.find_element(By.ID, "reprocess").click()
        until(browser, lambda d: text_of(d, "#message-status") == "SENT",
              "the message SENT after reprocess")
        assert CONTROL_ID.encode() in (tmp_path / "ehr.hl7").read_bytes()
        response = until(browser, lambda d: d.find_element(
            By.CSS_SELECTOR, '#acks .payload[data-kind="response"][data-destination="ehr"]'),
            "the EHR's ACK")
        assert response.find_element(By.CSS_SELECTOR, '[data-path="MSA-1"]').text in (
            "AA", "CA")
        assert response.find_element(By.CSS_SELECTOR, '[data-path="MSA-2"]').text == CONTROL_ID
        assert "SENT" in text_of(browser, '#deliveries-table tr[data-destination="ehr"]')

        # Back on the channels page the destination's counters have moved.
        browser.find_element(By.CSS_SELECTOR, 'a[data-page="channels"]').click()
        until(browser, lambda d: counter(d, "ehr", "sent") == "1",
              "the ehr destination's sent counter at 1")
        until(browser, lambda d: text_of(d, f'{icu} [data-counter="sent"]') == "1",
              "the icu channel's sent counter at 1")

        # A viewer sees counters and states, and no way to message content.
        browser.find_element(By.ID, "logout").click()
        log_in(browser, "victor", PASSWORDS["victor"])
        until(browser, lambda d: counter(d, "ehr", "sent") == "1", "the viewer's channels page")
        assert not browser.find_element(By.CSS_SELECTOR, 'a[data-page="messages"]').is_displayed()
        browser.get(f"http://127.0.0.1:{engine.admin_port}/#/messages/1")
        until(browser, lambda d: "operator role" in text_of(d, "#view"),
              "the viewer told that content needs the operator role")
        assert not browser.find_elements(By.CSS_SELECTOR, ".segment")

        # The viewer changes his own password on the Password page.
        until(browser, lambda d: click(d, 'a[data-page="account"]'), "the password page")
        fresh = "victors-new-pass-4"

        def change_password(current: str, new: str, again: str) -> None:
            for field, value in (("current", current), ("new", new), ("again", again)):
                box = until(browser, lambda d, f=field: d.find_element(By.ID, f"password-{f}"),
                            f"the {field} password box")
                box.clear()
                box.send_keys(value)
            browser.find_element(By.ID, "password-submit").click()

        change_password(PASSWORDS["victor"], fresh, fresh + "x")
        until(browser, lambda d: text_of(d, "#password-error") == "The new passwords differ.",
              "the mismatch refused in the page")
        change_password("not his password", fresh, fresh)
        until(browser, lambda d: text_of(d, "#password-error")
              == "The current password is wrong.", "a wrong current password refused")
        change_password(PASSWORDS["victor"], fresh, fresh)
        until(browser, lambda d: text_of(d, "#notice") == "Password changed.",
              "the password changed")
        browser.find_element(By.ID, "logout").click()
        log_in(browser, "victor", PASSWORDS["victor"])
        until(browser, lambda d: text_of(d, "#login-error") == "Wrong user or password.",
              "the old password refused")
        log_in(browser, "victor", fresh)
        until(browser, lambda d: text_of(d, "#who") == "victor · viewer", "the new one works")

        # An administrator pauses and resumes the channel from the page.
        browser.find_element(By.ID, "logout").click()
        log_in(browser, "ada", PASSWORDS["ada"])
        browser.find_element(By.CSS_SELECTOR, 'a[data-page="channels"]').click()
        until(browser, lambda d: re.fullmatch(r"\d+(\.\d)?/s",
                                              text_of(d, f'{icu} [data-rate="received"]')),
              "a received rate computed between two refreshes")
        state = f'{icu} [data-field="state"]'
        until(browser, lambda d: d.find_element(By.CSS_SELECTOR, f'{icu} [data-action="pause"]'),
              "the pause button").click()
        until(browser, lambda d: text_of(d, state) == "paused", "the channel paused")
        assert refused(source_port)
        until(browser, lambda d: d.find_element(By.CSS_SELECTOR, f'{icu} [data-action="resume"]'),
              "the resume button").click()
        until(browser, lambda d: text_of(d, state) == "deployed", "the channel resumed")
        wait_for_port(source_port, engine.proc)
    finally:
        if sink is not None:
            sink.terminate()
            sink.wait(timeout=30)
        assert engine.stop() == 0
