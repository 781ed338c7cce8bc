"""The operator side: store, fleet transport, VM lifecycle, maker-checker, reports."""
