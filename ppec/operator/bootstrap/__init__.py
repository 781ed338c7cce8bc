"""Host bootstrap: `ppec host add --install` and `host remove --uninstall` (issue 28)."""
