"""The ledger's schema, script by script (``ppec.core.sqlschema`` runs them in order).

Script N takes the ledger from version N-1 to N; a released script is never edited, a
change is a new script at the end.
"""

from __future__ import annotations

MIGRATIONS = [
    """
    CREATE TABLE IF NOT EXISTS vms (
        name        TEXT PRIMARY KEY,
        uuid        TEXT NOT NULL UNIQUE,
        state       TEXT NOT NULL CHECK (state IN ('creating', 'present', 'deleting')),
        vcpus       INTEGER NOT NULL,
        memory_mib  INTEGER NOT NULL,
        disk_path   TEXT NOT NULL UNIQUE,
        disk_bytes  INTEGER NOT NULL,
        image       TEXT NOT NULL DEFAULT '',
        power       TEXT NOT NULL DEFAULT 'running',
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL
    )
    """,
    """
    ALTER TABLE vms ADD COLUMN policy TEXT NOT NULL DEFAULT 'shared';
    ALTER TABLE vms ADD COLUMN threads TEXT NOT NULL DEFAULT 'prefer';
    ALTER TABLE vms ADD COLUMN emulator TEXT NOT NULL DEFAULT 'share';
    ALTER TABLE vms ADD COLUMN numa_nodes INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE vm_cpus (
        cpu  INTEGER PRIMARY KEY,
        vm   TEXT NOT NULL REFERENCES vms(name) ON DELETE CASCADE
    );
    CREATE TABLE vm_memory (
        vm    TEXT NOT NULL REFERENCES vms(name) ON DELETE CASCADE,
        cell  INTEGER NOT NULL,
        mib   INTEGER NOT NULL,
        PRIMARY KEY (vm, cell)
    )
    """,
    """
    CREATE TABLE used_nonces (
        nonce    TEXT PRIMARY KEY,
        digest   TEXT NOT NULL,
        used_at  TEXT NOT NULL
    )
    """,
    """
    CREATE TABLE alerts (
        code        TEXT NOT NULL,
        object      TEXT NOT NULL,
        detail      TEXT NOT NULL,
        first_seen  TEXT NOT NULL,
        last_seen   TEXT NOT NULL,
        PRIMARY KEY (code, object)
    )
    """,
    # Data disks: written before each step of an attach or detach (handlers/disks.py).
    """
    CREATE TABLE disks (
        vm          TEXT NOT NULL REFERENCES vms(name) ON DELETE CASCADE,
        target      TEXT NOT NULL,
        path        TEXT NOT NULL UNIQUE,
        bytes       INTEGER NOT NULL,
        bus         TEXT NOT NULL,
        format      TEXT NOT NULL,
        owned       INTEGER NOT NULL,
        keep        INTEGER NOT NULL DEFAULT 0,
        state       TEXT NOT NULL CHECK (state IN
                        ('attaching', 'attached', 'detaching', 'detach-pending')),
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL,
        PRIMARY KEY (vm, target)
    )
    """,
    # The operator's audit chain head that came with an approved execution, written with
    # its spent nonce: what ``ppec audit verify`` checks the store's chain against.
    """
    CREATE TABLE audit_anchors (
        nonce   TEXT PRIMARY KEY REFERENCES used_nonces(nonce),
        seq     INTEGER NOT NULL,
        hash    TEXT NOT NULL,
        digest  TEXT NOT NULL,
        at      TEXT NOT NULL
    )
    """,
    # The whole VM as one document (VmSpec.document, JSON); '' for VMs built before it.
    # The MAC of each NIC is unique on the host, by index: two VMs never share one.
    """
    ALTER TABLE vms ADD COLUMN spec TEXT NOT NULL DEFAULT '';
    CREATE TABLE vm_nics (
        mac  TEXT PRIMARY KEY,
        vm   TEXT NOT NULL REFERENCES vms(name) ON DELETE CASCADE
    )
    """,
    # A VM moving between hosts (issue 26): 'migrating' on the source, 'incoming' on the
    # target (its claim), and the move as JSON. SQLite cannot change a CHECK in place:
    # the table is rebuilt (the ledger runs its scripts with foreign keys off, so the
    # DROP does not cascade to the rows that reference a VM).
    """
    CREATE TABLE vms_new (
        name        TEXT PRIMARY KEY,
        uuid        TEXT NOT NULL UNIQUE,
        state       TEXT NOT NULL CHECK (state IN
                        ('creating', 'present', 'deleting', 'migrating', 'incoming')),
        vcpus       INTEGER NOT NULL,
        memory_mib  INTEGER NOT NULL,
        disk_path   TEXT NOT NULL UNIQUE,
        disk_bytes  INTEGER NOT NULL,
        image       TEXT NOT NULL DEFAULT '',
        power       TEXT NOT NULL DEFAULT 'running',
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL,
        policy      TEXT NOT NULL DEFAULT 'shared',
        threads     TEXT NOT NULL DEFAULT 'prefer',
        emulator    TEXT NOT NULL DEFAULT 'share',
        numa_nodes  INTEGER NOT NULL DEFAULT 0,
        spec        TEXT NOT NULL DEFAULT '',
        migration   TEXT NOT NULL DEFAULT ''
    );
    INSERT INTO vms_new (name, uuid, state, vcpus, memory_mib, disk_path, disk_bytes, image,
                         power, created_at, updated_at, policy, threads, emulator,
                         numa_nodes, spec)
        SELECT name, uuid, state, vcpus, memory_mib, disk_path, disk_bytes, image, power,
               created_at, updated_at, policy, threads, emulator, numa_nodes, spec FROM vms;
    DROP TABLE vms;
    ALTER TABLE vms_new RENAME TO vms
    """,
]
