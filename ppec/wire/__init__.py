"""The wire between operator and agent: framing, the method table, the VM shape, bundles."""
