"""The web UI in a real browser: Debian's chromium driven by selenium through
chromium-driver, over real agents on libvirt's test driver with VMs made by
`ppec vm create`. Screenshots go to the test's tmp_path."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ppec.operator import config as ppec_config
from ppec.operator.store import Store, fleetstate
from tests.policy import as_, install_policy, make_people
from tests.realparts import Agent, Cli, wait_until
from tests.service.http_support import serving

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    missing = [p for p in (CHROMIUM, DRIVER) if not Path(p).exists()]
    if missing:
        pytest.skip(f"{', '.join(missing)} missing (scripts/setup.sh installs chromium and "
                    f"chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic",
                 "--disable-default-apps", "--window-size=1400,1000",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@dataclass
class Site:
    url: str
    cli: Cli


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("web")
    people = make_people(root)
    cli = Cli(root / "operator")
    install_policy(cli, root, people)
    agents = {n: Agent(root / n, host=n, libvirt_uri="test:///default").start()
              for n in ("bm-eu-1", "bm-us-1")}
    try:
        for name, agent in agents.items():
            region = name.split("-")[1]
            cli.ok("host", "add", name, "--address", "local", "--socket", str(agent.socket),
                   "--region", region, "--rack", f"{region}-r1")
        cli.ok("vm", "create", "db-1", "--cpus", "4", "--memory", "1G", "--disk", "1G",
               "--numa", "dedicated", "--host", "bm-eu-1")
        cli.ok("vm", "create", "cache-1", "--cpus", "2", "--memory", "512M", "--disk", "1G",
               "--numa", "dedicated", "--host", "bm-eu-1")
        cli.ok("vm", "create", "web-1", "--flavor", "tiny", "--host", "bm-eu-1")
        cli.ok("vm", "create", "web-2", "--flavor", "tiny", "--host", "bm-us-1")
        cli.ok("host", "drain", "bm-us-1")
        cli.ok("sync")
        assert as_(cli, people["alice"], "vm", "delete", "web-2"
                   ).returncode == 4  # type: ignore[attr-defined]
        config = ppec_config.load(Path(cli.env["PPEC_CONFIG"]))
        with serving(cli.db, config=config, fresh_for=600) as url:
            yield Site(url, cli)
    finally:
        for agent in agents.values():
            agent.kill()


def shot(browser: Any, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    browser.save_screenshot(str(path))
    # Kept for people: the last run's pictures, outside pytest's rotating temp dirs too.
    keep = Path("/tmp/ppec-web-screenshots")
    keep.mkdir(exist_ok=True)
    shutil.copy(path, keep / path.name)
    return path


def css(browser: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By
    return list(browser.find_elements(By.CSS_SELECTOR, selector))


def test_fleet_overview_shows_the_real_hosts(browser: Any, site: Site, tmp_path: Path) -> None:
    browser.get(site.url + "/")
    rows = {r.get_attribute("data-host"): r for r in css(browser, "#hosts tbody tr[data-host]")}
    assert list(rows) == ["bm-eu-1", "bm-us-1"]
    eu = rows["bm-eu-1"].text
    assert "fresh" in eu and "eu / eu-r1" in eu and "6 / 16 CPUs" in eu
    assert "drained" in rows["bm-us-1"].text and "drained" not in eu
    assert len(css(browser, "#hosts .bar")) == 6
    assert "1 pending request" in css(browser, "#pending-requests")[0].text
    assert shot(browser, tmp_path, "fleet").stat().st_size > 10_000


def test_the_numa_picture_shows_each_dedicated_vms_cpus(browser: Any, site: Site,
                                                        tmp_path: Path) -> None:
    browser.get(site.url + "/hosts/bm-eu-1")
    nodes = css(browser, "#numa .node")
    assert [n.get_attribute("data-node") for n in nodes] == ["0", "1"]
    cells = css(browser, "#numa .cpu")
    assert len(cells) == 16
    held: dict[str, list[int]] = {}
    for cell in cells:
        if cell.get_attribute("data-vm"):
            held.setdefault(cell.get_attribute("data-vm"), []).append(
                int(cell.get_attribute("data-cpu")))
            assert cell.get_attribute("data-vm") in cell.text   # labelled, not only coloured
    assert {vm: len(c) for vm, c in held.items()} == {"db-1": 4, "cache-1": 2}
    vm_rows = {r.get_attribute("data-vm"): r.text for r in css(browser, "#vms tr[data-vm]")}
    for vm, cpus in held.items():   # the table and the picture tell the same story
        assert f"dedicated: CPUs {','.join(map(str, sorted(cpus)))}" in vm_rows[vm]
    colours = {c.value_of_css_property("background-color") for c in cells
               if c.get_attribute("data-vm") == "db-1"}
    assert len(colours) == 1 and colours != {c.value_of_css_property("background-color")
                                             for c in cells
                                             if c.get_attribute("data-vm") == "cache-1"}
    assert "web-1" in browser.find_element("css selector", "main").text
    shot(browser, tmp_path, "host")


def test_vms_filter_by_host_and_state(browser: Any, site: Site, tmp_path: Path) -> None:
    browser.get(site.url + "/vms")
    assert [r.get_attribute("data-vm") for r in css(browser, "#vms tr[data-vm]")] == [
        "cache-1", "db-1", "web-1", "web-2"]
    field = css(browser, "form.filters input[name=host]")[0]
    field.send_keys("bm-us-1")
    field.submit()
    wait_until(lambda: "host=bm-us-1" in browser.current_url, 30, "the filter applied")
    assert [r.get_attribute("data-vm") for r in css(browser, "#vms tr[data-vm]")] == ["web-2"]
    browser.get(site.url + "/vms?state=shut-off")
    assert css(browser, "#vms tr[data-vm]") == []
    shot(browser, tmp_path, "vms")


def test_capacity_requests_and_audit_pages(browser: Any, site: Site, tmp_path: Path) -> None:
    browser.get(site.url + "/capacity")
    rows = {r.get_attribute("data-flavor"): r.text
            for r in css(browser, "#capacity-region tr[data-flavor]")}
    assert set(rows) == set(ppec_config.load(Path(site.cli.env["PPEC_CONFIG"])).flavors)
    heads = [h.text for h in css(browser, "#capacity-rack th")]
    assert "eu/eu-r1" in heads   # bm-us-1 is drained: left out
    shot(browser, tmp_path, "capacity")
    browser.get(site.url + "/requests")
    [row] = css(browser, "#requests tr[data-request]")
    rid = row.get_attribute("data-request")
    assert css(browser, "#requests code.cmd")[0].text == f"ppec request approve {rid}"
    assert "vm.delete" in row.text and "web-2" in row.text
    shot(browser, tmp_path, "requests")
    browser.get(site.url + "/audit")
    audit = css(browser, "#audit")[0]
    assert audit.get_attribute("data-state") == "intact" and "entr" in audit.text


def test_an_alert_raised_meanwhile_appears_without_reload(browser: Any, site: Site,
                                                          tmp_path: Path) -> None:
    browser.get(site.url + "/alerts")
    assert css(browser, "#alerts tr[data-alert]") == []
    browser.execute_script("window.ppecTestMarker = 'still the same page';")
    store = Store(str(site.cli.db))
    try:
        fleetstate.sync_alerts(store, "bm-eu-1", "drift", [
            ("VCPU_MISMATCH", "db-1", "libvirt has 2 vCPUs, the ledger 4")], time.time())
    finally:
        store.close()
    wait_until(lambda: css(browser, "#alerts tr[data-code=VCPU_MISMATCH]"), 30,
               "the new alert on the page")
    assert browser.execute_script("return window.ppecTestMarker") == "still the same page"
    row = css(browser, "#alerts tr[data-code=VCPU_MISMATCH]")[0].text
    assert "bm-eu-1" in row and "db-1" in row and "open" in row
    assert "1 open alert" in css(browser, "#open-alerts")[0].text
    shot(browser, tmp_path, "alerts")
