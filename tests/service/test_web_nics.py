"""VM NICs and host networks in the web UI, in a real browser (Debian's chromium through
selenium, as test_web_ui): the VM tables' NICs column on /vms and on the host page, the
host page's networks and CPU model, and both again after the page refreshed itself."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ppec.service.http.web import nic_label
from tests.realparts import wait_until
from tests.service.http_support import serving
from tests.service.test_http_nics import LIVE_A, MAC_A, MAC_B, with_nics
from tests.service.test_web_ui import browser, css, shot  # noqa: F401  (`site` uses it)

PRIMARY = f"10.93.0.2/24 ({MAC_A}) on br-prod"
UNSEEN = f"dhcp ({MAC_B}) vrf mgmt"      # not in the host's snapshot: no device to name


@dataclass
class Site:
    browser: Any
    url: str

    def open(self, path: str) -> Any:
        self.browser.get(self.url + path)
        return self.browser


@pytest.fixture(scope="module")
def site(browser: Any,  # noqa: F811  (the fixture imported above)
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    db = tmp_path_factory.mktemp("web-nics") / "ppec.db"
    with_nics(db)
    with serving(db, fresh_for=600) as url:
        yield Site(browser, url)


def nic_cells(page: Any) -> dict[str, list[str]]:
    """VM -> the text of each NIC in its row."""
    return {row.get_attribute("data-vm"): [n.text for n in row.find_elements(
                "css selector", "td.nics .nic")]
            for row in css(page, "#vms tr[data-vm]")}


def test_a_nic_reads_address_mac_and_device() -> None:
    assert nic_label(LIVE_A) == PRIMARY
    assert nic_label({**LIVE_A, "address": "", "bridge": "", "vrf": "mgmt",
                      "mac": MAC_B}) == UNSEEN


def test_the_vm_table_shows_each_nic(site: Site, tmp_path: Path) -> None:
    page = site.open("/vms?host=h00000")
    assert nic_cells(page) == {"h00000-vm000": [PRIMARY, UNSEEN], "h00000-vm001": [],
                               "h00000-vm002": []}
    assert "NICs" in [h.text for h in css(page, "#vms th")]
    shot(page, tmp_path, "vms-nics")


def test_the_host_page_shows_networks_cpu_and_nics(site: Site, tmp_path: Path) -> None:
    page = site.open("/hosts/h00000")
    nets = {r.get_attribute("data-network"): r.text for r in css(page, "#networks tr")
            if r.get_attribute("data-network")}
    assert list(nets) == ["prod", "mgmt", "backup"]
    assert all(w in nets["prod"] for w in ("bridge", "br-prod", "up", "9000"))
    assert all(w in nets["mgmt"] for w in ("macvtap", "eno2", "absent"))
    assert all(w in nets["backup"] for w in ("br-bk", "down", "1500 (device's)"))
    cpu = css(page, "#cpu-model")[0].text
    assert "host-model" in cpu and "Skylake-Server" in cpu and "vhost-net yes" in cpu
    assert nic_cells(page)["h00000-vm000"] == [PRIMARY, UNSEEN]
    # The live part is fetched again as a fragment: the same NICs and networks after it.
    marker = css(page, "#live")[0].get_attribute("data-refreshed")
    wait_until(lambda: css(page, "#live")[0].get_attribute("data-refreshed") != marker,
               30, "the page refreshed itself")
    assert nic_cells(page)["h00000-vm000"] == [PRIMARY, UNSEEN]
    assert len(css(page, "#networks tr[data-network]")) == 3
    shot(page, tmp_path, "host-nics")


def test_a_host_without_a_snapshot_has_no_networks_table(site: Site) -> None:
    page = site.open("/hosts/h99999")
    assert css(page, "#networks") == [] and css(page, "#cpu-model") == []
    site.open("/hosts/h00002")     # an agent before networks: an empty table
    assert "no networks configured" in css(page, "#networks")[0].text
