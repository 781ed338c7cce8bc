"""The operator store's schema: its migrations, in order (a store records how many it has
run). Apart from the Store class, which only runs them: every module that keeps tables
in the store (ipdb, audit, fleetstate, images) finds its DDL here, numbered."""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: hosts and VMs
    """
    CREATE TABLE hosts (
        name          TEXT PRIMARY KEY,
        address       TEXT NOT NULL,
        port          INTEGER NOT NULL DEFAULT 22,
        username      TEXT NOT NULL DEFAULT 'root',
        identity      TEXT NOT NULL DEFAULT '',
        socket        TEXT NOT NULL DEFAULT '/run/ppec/agent.sock',
        region        TEXT NOT NULL DEFAULT '',
        rack          TEXT NOT NULL DEFAULT '',
        power_domain  TEXT NOT NULL DEFAULT '',
        vrf           TEXT NOT NULL DEFAULT '',
        cost          REAL NOT NULL DEFAULT 0,
        tags          TEXT NOT NULL DEFAULT '[]',
        drained       INTEGER NOT NULL DEFAULT 0,
        added_at      TEXT NOT NULL
    );
    CREATE TABLE vms (
        name        TEXT PRIMARY KEY,
        host        TEXT NOT NULL REFERENCES hosts(name),
        state       TEXT NOT NULL,
        vcpus       INTEGER NOT NULL,
        memory_mib  INTEGER NOT NULL,
        disk_bytes  INTEGER NOT NULL,
        image       TEXT NOT NULL DEFAULT '',
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL
    );
    CREATE INDEX vms_host ON vms(host);
    """,
    # 2: placement: power model, HA groups (one member per spread key, by constraint),
    #    the latest snapshot of each host
    """
    ALTER TABLE hosts ADD COLUMN power_idle_w REAL NOT NULL DEFAULT 0;
    ALTER TABLE hosts ADD COLUMN power_max_w REAL NOT NULL DEFAULT 0;
    CREATE TABLE ha_groups (
        name    TEXT PRIMARY KEY,
        spread  TEXT NOT NULL CHECK (spread IN ('host', 'rack', 'power_domain'))
    );
    ALTER TABLE vms ADD COLUMN ha_group TEXT REFERENCES ha_groups(name);
    ALTER TABLE vms ADD COLUMN ha_key TEXT;
    CREATE UNIQUE INDEX vms_ha_spread ON vms(ha_group, ha_key) WHERE ha_group IS NOT NULL;
    CREATE TABLE snapshots (
        host      TEXT PRIMARY KEY REFERENCES hosts(name) ON DELETE CASCADE,
        taken_at  REAL NOT NULL,
        data      TEXT NOT NULL
    )
    """,
    # 3: IP pools per VRF; an address is unique in its VRF by primary key
    """
    CREATE TABLE ip_pools (
        name        TEXT PRIMARY KEY,
        vrf         TEXT NOT NULL,
        cidr        TEXT NOT NULL,
        gateway     TEXT NOT NULL DEFAULT '',
        dns         TEXT NOT NULL DEFAULT '[]',
        reserved    TEXT NOT NULL DEFAULT '[]',
        created_at  TEXT NOT NULL
    );
    CREATE TABLE ip_addresses (
        vrf           TEXT NOT NULL,
        address       TEXT NOT NULL,
        pool          TEXT NOT NULL REFERENCES ip_pools(name),
        owner         TEXT NOT NULL DEFAULT '',
        allocated_at  TEXT NOT NULL,
        PRIMARY KEY (vrf, address)
    )
    """,
    # 4: maker-checker requests and the hash-chained audit log
    """
    CREATE TABLE requests (
        id           INTEGER PRIMARY KEY,
        payload      TEXT NOT NULL,
        digest       TEXT NOT NULL UNIQUE,
        maker        TEXT NOT NULL,
        maker_sig    TEXT NOT NULL,
        state        TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'rejected',
                                                    'cancelled', 'executed', 'failed')),
        checker      TEXT NOT NULL DEFAULT '',
        checker_sig  TEXT NOT NULL DEFAULT '',
        note         TEXT NOT NULL DEFAULT '',
        updated_at   TEXT NOT NULL
    );
    CREATE TABLE audit (
        seq         INTEGER PRIMARY KEY,
        at          TEXT NOT NULL,
        actor       TEXT NOT NULL,
        action      TEXT NOT NULL,
        request_id  INTEGER,
        detail      TEXT NOT NULL,
        prev        TEXT NOT NULL,
        hash        TEXT NOT NULL
    )
    """,
    # 5: the service's view (ppec.operator.store.fleetstate): host reachability and
    #    back-off, fleet-wide alerts with first/last seen and resolution, job runs
    """
CREATE TABLE host_status (
    host          TEXT PRIMARY KEY REFERENCES hosts(name) ON DELETE CASCADE,
    state         TEXT NOT NULL CHECK (state IN ('ok', 'failed')),
    last_ok       REAL,
    last_attempt  REAL NOT NULL,
    failures      INTEGER NOT NULL DEFAULT 0,
    next_attempt  REAL NOT NULL DEFAULT 0,
    error_code    TEXT NOT NULL DEFAULT '',
    error         TEXT NOT NULL DEFAULT ''
);
CREATE TABLE fleet_alerts (
    id           INTEGER PRIMARY KEY,
    host         TEXT NOT NULL,
    source       TEXT NOT NULL,
    code         TEXT NOT NULL,
    object       TEXT NOT NULL,
    detail       TEXT NOT NULL DEFAULT '',
    first_seen   REAL NOT NULL,
    last_seen    REAL NOT NULL,
    resolved_at  REAL
);
CREATE UNIQUE INDEX fleet_alerts_open ON fleet_alerts(host, source, code, object)
    WHERE resolved_at IS NULL;
CREATE INDEX fleet_alerts_host ON fleet_alerts(host);
CREATE TABLE job_runs (
    job       TEXT PRIMARY KEY,
    started   REAL NOT NULL,
    duration  REAL NOT NULL,
    ok        INTEGER NOT NULL,
    hosts     INTEGER NOT NULL DEFAULT 0,
    failed    INTEGER NOT NULL DEFAULT 0,
    error     TEXT NOT NULL DEFAULT '',
    runs      INTEGER NOT NULL DEFAULT 0,
    failures  INTEGER NOT NULL DEFAULT 0
)
    """,
    # 6: byte counts as 8-byte integers on PostgreSQL (a disk of 2 GiB or more)
    """
    ALTER TABLE vms ALTER COLUMN disk_bytes TYPE BIGINT
    """,
    # 7: when a VM last left each host (deleted, or a claim given up): the vms table no
    #    longer shows it, and placement must not trust a snapshot that still counts it
    """
    CREATE TABLE vm_departures (
        host  TEXT PRIMARY KEY REFERENCES hosts(name) ON DELETE CASCADE,
        at    TEXT NOT NULL
    )
    """,
    # 8: beside each snapshot, the part placement reads (store/snaprows.py)
    """
    ALTER TABLE snapshots ADD COLUMN placement TEXT
    """,
    # 9: the whole VM as one document (VmSpec.document, JSON; NULL for VMs built before
    #    it), and each VM's NICs: a MAC is unique fleet-wide by primary key, allocated in
    #    the address's transaction and released with it (operator/ipdb.py)
    """
    ALTER TABLE vms ADD COLUMN spec TEXT;
    CREATE TABLE vm_nics (
        mac           TEXT PRIMARY KEY,
        vm            TEXT NOT NULL,
        slot          INTEGER NOT NULL,
        vrf           TEXT NOT NULL,
        address       TEXT NOT NULL DEFAULT '',
        allocated_at  TEXT NOT NULL,
        UNIQUE (vm, slot)
    )
    """,
    # 10: the image catalogue (operator/images.py): versions by name and SHA-256, and the
    #     hosts each digest was pushed to
    """
    CREATE TABLE images (
        name           TEXT NOT NULL,
        digest         TEXT NOT NULL,
        kind           TEXT NOT NULL CHECK (kind IN ('disk', 'kernel', 'initrd')),
        format         TEXT NOT NULL,
        virtual_bytes  INTEGER NOT NULL,
        file_bytes     INTEGER NOT NULL,
        source         TEXT NOT NULL,
        os_user        TEXT NOT NULL DEFAULT '',
        description    TEXT NOT NULL DEFAULT '',
        added_at       TEXT NOT NULL,
        version        INTEGER NOT NULL,
        PRIMARY KEY (name, digest),
        UNIQUE (name, version)
    );
    CREATE TABLE image_hosts (
        digest  TEXT NOT NULL,
        host    TEXT NOT NULL REFERENCES hosts(name) ON DELETE CASCADE,
        at      TEXT NOT NULL,
        PRIMARY KEY (digest, host)
    )
    """,
    # 11: a VM being moved (issue 26): the host it is moving to, until the move is
    #     settled (operator/migrate.py), and the host an evacuation took it from (for
    #     `host restore --move-back`)
    """
    ALTER TABLE vms ADD COLUMN moving_to TEXT;
    ALTER TABLE vms ADD COLUMN evacuated_from TEXT
    """,
    # 12: when ppec last changed a VM on each host (epoch seconds, the operator's clock),
    #     written with the VM row: every view's "is this snapshot still true" reads it
    #     (core/freshness.py). Replaces vm_departures, whose whole seconds made a snapshot
    #     taken in the same second as a change look older than it. Stores upgraded from 11
    #     start with no change recorded: the next snapshot is believed as before.
    """
    ALTER TABLE hosts ADD COLUMN vms_changed_at REAL;
    CREATE INDEX hosts_vms_changed ON hosts (vms_changed_at);
    DROP TABLE vm_departures
    """,
    # 13: a snapshot's allocations and topology as JSON text in columns of their own
    #     (snaprows.row), out of the placement part that every fleet-wide reader parses
    """
    ALTER TABLE snapshots ADD COLUMN allocations TEXT;
    ALTER TABLE snapshots ADD COLUMN topology TEXT
    """,
]
